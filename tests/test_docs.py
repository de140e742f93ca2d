"""The documentation stands on its own: every citation of docs/ in code and docs points at a
section that exists, nothing refers to a file outside the repository, and the worked examples
of docs/architecture.md run against the current code."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.images import load_rgb

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PRODUCT = ["bench", "methods", "docs", "benchmarks", "datasets"]


def product_files():
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md") and "__pycache__" not in path.parts:
                yield path


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_section_citations_point_at_existing_sections():
    protocol_sections = {h.split(".", 1)[0] for h in headings(DOCS / "protocols.md") if re.match(r"\d+b?\.", h)}
    assert protocol_sections == {"1", "1b", "2", "3", "4", "5", "6", "7"}
    protocols = (DOCS / "protocols.md").read_text(encoding="utf-8")
    architecture = headings(DOCS / "architecture.md")
    cited = 0
    for path in product_files():
        text = path.read_text(encoding="utf-8")
        for section, name in re.findall(r'docs/protocols\.md section (\d+b?)(?:, "([^"]+)")?', text):
            cited += 1
            assert section in protocol_sections, f"{path}: cites a missing section {section}"
            if name:
                assert name in protocols, f"{path}: cites {name!r}, which docs/protocols.md does not have"
        for name in re.findall(r'docs/protocols\.md, "([^"]+)"', text):
            assert name in headings(DOCS / "protocols.md"), f"{path}: cites a missing part {name!r}"
        for name in re.findall(r'docs/architecture\.md,? "([^"]+)"', text):
            assert name in architecture, f"{path}: cites a missing part {name!r} of docs/architecture.md"
    assert cited > 50


def test_nothing_refers_to_files_outside_the_repository():
    outside = re.compile(r"\.\./shared|shared/(DESIGN|PROTOCOLS)|\bPROTOCOLS\.md|\bDESIGN\.md")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in product_files()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert offenders == []


def test_docs_links_resolve():
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    sys.path.insert(0, str(DOCS / "examples"))
    try:
        import run_examples
        from bench.cli import main

        run_examples.register()
        out = tmp_path_factory.mktemp("examples")
        codes = [main(["run", "--method", "copy-subject", "--suite", "dreambench", "--preset", "smoke",
                       "--metrics", "sharpness,dino", "--out", str(out / "copy")]),
                 main(["run", "--method", "copy-subject-mirrored", "--suite", "folders", "--preset", "smoke",
                       "--metrics", "sharpness", "--out", str(out / "mirror")])]
        codes.append(main(["report", str(out / "copy"), str(out / "mirror"), "--out", str(out / "reports")]))
        yield out, codes
    finally:
        sys.path.remove(str(DOCS / "examples"))


def test_worked_method_metric_and_suite_run_end_to_end(examples):
    out, codes = examples
    assert codes == [0, 0, 0]
    run = json.loads((out / "mirror" / "run.json").read_text())
    assert run["method"]["params"] == {"mirror": "horizontal", "size": 64}
    assert run["identity"]["suite"]["name"] == "folders"
    records = [json.loads(line) for line in next((out / "mirror" / "generations").glob("*.jsonl")).read_text().splitlines()]
    assert len(records) == 3 * 3                                          # 3 subjects x 3 prompts x 1 image (smoke)
    subject_dir = ROOT / "datasets" / "mini-dreambench" / "dataset"
    for rec in records:
        subject = rec["key"].split("/")[1]
        source = load_rgb(subject_dir / subject / rec["copied_from"]).resize((64, 64))
        mirrored = np.asarray(source)[:, ::-1]
        assert np.array_equal(np.asarray(load_rgb(out / "mirror" / rec["image"])), mirrored)
    scores = pd.read_parquet(out / "copy" / "scores.parquet")
    sharp = scores[scores["metric"] == "sharpness/laplacian"]["value"]
    assert len(sharp) == 12 and (sharp > 0).all()
    assert (out / "reports" / "leaderboard-folders.md").exists()
    md = (out / "reports" / "leaderboard-dreambench.md").read_text()
    assert "`sharpness/laplacian`" in md and "none (copies the subject image)" in md


def test_worked_metric_matches_a_direct_computation(tmp_path):
    sys.path.insert(0, str(DOCS / "examples"))
    try:
        from sharpness import Sharpness

        from bench.metrics.base import ScoreItem
    finally:
        sys.path.remove(str(DOCS / "examples"))
    from PIL import Image
    check = np.zeros((8, 8), dtype=np.uint8)
    check[::2, ::2] = 255
    Image.fromarray(check).save(tmp_path / "c.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "flat.png")
    items = [ScoreItem(key=f"k{i}", image=tmp_path / n, seed=0, subject="s", class_noun="c", eval_text="",
                       reference_images=(), subject_images=()) for i, n in enumerate(("c.png", "flat.png"))]
    values = [v["sharpness/laplacian"] for v in Sharpness().score(items)]
    g = check.astype(float)
    inner = np.abs(g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]).mean()
    assert values == pytest.approx([inner, 0.0])
