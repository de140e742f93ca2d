"""The scoring stage: long-format scores, the per-run cache (no model work on a rerun),
incremental scoring, images made elsewhere (folder layout and CSV manifest)."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.clip import ClipMetric
from bench.metrics.dino import DinoMetric
from bench.external_images import prepare_external_run
from bench.scoring import SCORE_COLUMNS, build_items, load_run_samples, score_run
from bench.store import RunStore
from bench.suites import REPO_ROOT, load_suite
from bench.types import request_key

MINI = REPO_ROOT / "datasets" / "mini-dreambench"
IDS = {"clip_t/tiny-random", "clip_i/tiny-random", "dino/tiny-random"}


def synthetic_image(label: str, size: int = 64) -> Image.Image:
    """A smooth random image determined by ``label``."""
    seed = int(hashlib.sha256(label.encode()).hexdigest()[:8], 16)
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BILINEAR)


def make_run(root: Path, method: str = "sd", seeds=(0, 1), per_prompt: int = 1, subjects=None, **info) -> RunStore:
    """A run directory written by hand (what the runner writes), over the mini DreamBench."""
    suite = load_suite("dreambench", MINI)
    store = RunStore.open_for_run(
        root, identity={"method": method, "model": "preset:tiny"},
        info={"suite": {"name": "dreambench", "root": str(MINI), "options": {}}, "metric_preset": "tiny",
              "metrics": ["clip", "dino"], "random_weights": True, "plan": {"seeds": list(seeds)}, **info})
    with store.writer(0) as writer:
        for sample in suite.samples():
            if subjects and sample.subject not in subjects:
                continue
            for seed in seeds:
                for k in range(per_prompt):
                    key = request_key(sample, seed, k)
                    writer.write(key, seed, synthetic_image(f"{method}:{key}"), 0.01)
    return store


class ForwardCounter:
    """Counts every nn.Module forward in the process while active."""

    def __enter__(self):
        self.calls = 0
        self.handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def _hook(self, *_):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    store = make_run(tmp_path_factory.mktemp("runs") / "sd")
    with ForwardCounter() as counter:
        df = score_run(store.root, progress=False)
    assert counter.calls > 0
    return store, df


def test_scores_are_long_format_with_one_row_per_image_and_metric(scored_run):
    store, df = scored_run
    assert list(df.columns) == SCORE_COLUMNS
    assert set(df["metric"]) == IDS
    n_images = len(store.records())
    assert n_images == 3 * 4 * 2
    assert len(df) == 3 * n_images
    assert df.groupby("metric")["key"].nunique().eq(n_images).all()
    assert df["value"].between(-1, 1).all() and df["value"].notna().all()
    assert set(df.loc[df["subject"] == "dog", "category"]) == {"live"}
    assert set(df.loc[df["subject"] == "vase", "category"]) == {"object"}
    assert set(df["seed"]) == {0, 1}
    on_disk = pd.read_parquet(store.scores_path)
    pd.testing.assert_frame_equal(on_disk, df, check_dtype=False)


def test_values_equal_the_metrics_applied_directly(scored_run):
    store, df = scored_run
    run = store.read_run()
    _, cells = load_run_samples(run, store.run_json)
    items = [item for item, _, _ in build_items(store, cells)]
    expected = {}
    for metric in (ClipMetric(preset="tiny"), DinoMetric(preset="tiny")):
        for item, values in zip(items, metric.score(items)):
            for mid, v in values.items():
                expected[(item.key, mid)] = v
    got = {(r.key, r.metric): r.value for r in df.itertuples()}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) < 1e-6 for k in got)
    # CLIP-T differs between the prompts of one image set: it really reads eval_text
    assert df[df["metric"] == "clip_t/tiny-random"]["value"].nunique() > 10


def test_rescoring_does_no_model_work(scored_run):
    store, df = scored_run
    with ForwardCounter() as counter:
        again = score_run(store.root, progress=False)
    assert counter.calls == 0
    pd.testing.assert_frame_equal(again, df)


def test_only_new_or_changed_images_are_scored(tmp_path, monkeypatch):
    store = make_run(tmp_path / "run", seeds=(0,), subjects={"dog"})
    first = score_run(store.root, progress=False)
    seen = []
    for cls in (ClipMetric, DinoMetric):
        original = cls.score
        monkeypatch.setattr(cls, "score", lambda self, items, _o=original: seen.extend(i.key for i in items) or _o(self, items))
        shared = cls.score_views             # the shared pipeline (bench.metrics.pipeline)
        monkeypatch.setattr(cls, "score_views", lambda self, items, pixels, _o=shared:
                            seen.extend(i.key for i in items) or _o(self, items, pixels))
    suite = load_suite("dreambench", MINI)
    dog = [s for s in suite.samples() if s.subject == "dog"]
    new_key = request_key(dog[0], 7, 0)
    changed_key = request_key(dog[1], 0, 0)
    with store.writer(0) as writer:
        writer.write(new_key, 7, synthetic_image("new"), 0.01)
        writer.write(changed_key, 0, synthetic_image("changed"), 0.01)
    second = score_run(store.root, progress=False)
    assert sorted(seen) == sorted([new_key, changed_key] * 2)       # once for CLIP, once for DINO
    assert len(second) == len(first) + 3
    old = first.set_index(["key", "metric"])["value"]
    new = second.set_index(["key", "metric"])["value"]
    for (key, metric), value in old.items():
        if key != changed_key:
            assert new[(key, metric)] == value
    assert new[(changed_key, "dino/tiny-random")] != old[(changed_key, "dino/tiny-random")]


def test_scoring_a_subset_keeps_other_metrics(tmp_path):
    store = make_run(tmp_path / "run", seeds=(0,), subjects={"vase"})
    both = score_run(store.root, progress=False)
    with ForwardCounter() as counter:
        dino_only = score_run(store.root, metrics="dino", progress=False)
    assert counter.calls == 0
    assert set(dino_only["metric"]) == IDS and len(dino_only) == len(both)
    paired = score_run(store.root, metrics=["clip"], metric_params={"clip": {"mode": "paired"}}, progress=False)
    assert "clip_i_paired/tiny-random" in set(paired["metric"]) and "dino/tiny-random" in set(paired["metric"])


def test_a_key_outside_the_suite_is_refused(tmp_path):
    store = make_run(tmp_path / "run", seeds=(0,), subjects={"vase"})
    with store.writer(0) as writer:
        writer.write("dreambench/unicorn/000/s0/i0", 0, synthetic_image("u"), 0.01)
    with pytest.raises(BenchError, match="unicorn.*not a cell"):
        score_run(store.root, progress=False)


def test_external_folder_and_manifest_score_like_the_run(scored_run, tmp_path):
    store, df = scored_run
    folder = tmp_path / "theirs"
    shutil.copytree(store.images_dir, folder)
    ext = prepare_external_run("dreambench", folder, tmp_path / "ext-run", data_root=MINI, metric_preset="tiny")
    ext_df = score_run(ext.root, progress=False)
    run = ext.read_run()
    assert run["identity"]["method"] == "external:theirs" and run["plan"]["seeds"] == [0, 1]
    merge = ext_df.merge(df, on=["key", "metric"], suffixes=("_ext", "_run"))
    assert len(merge) == len(df)
    assert np.allclose(merge["value_ext"], merge["value_run"], atol=1e-6)

    manifest = tmp_path / "manifest.csv"
    records = sorted(store.records().values(), key=lambda r: r["key"])[:5]
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject", "prompt_index", "seed", "image_index", "key", "path"])
        for i, rec in enumerate(records):
            _, subject, prompt, seed, index = rec["key"].split("/")
            key = rec["key"] if i % 2 else ""
            writer.writerow([subject, int(prompt), seed[1:], index[1:], key, str(store.root / rec["image"])])
    from_csv = prepare_external_run("dreambench", manifest, tmp_path / "csv-run", data_root=MINI, metric_preset="tiny")
    assert sorted(from_csv.records()) == [r["key"] for r in records]
    csv_df = score_run(from_csv.root, progress=False)
    assert len(csv_df) == 5 * 3


def test_external_layout_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad" / "dog" / "000"
    bad.mkdir(parents=True)
    synthetic_image("x").save(bad / "image.png")
    with pytest.raises(BenchError, match="image.png: not in the layout"):
        prepare_external_run("dreambench", tmp_path / "bad", tmp_path / "o1", data_root=MINI)
    unknown = tmp_path / "unknown" / "unicorn" / "000" / "s0"
    unknown.mkdir(parents=True)
    synthetic_image("x").save(unknown / "i0.png")
    with pytest.raises(BenchError, match="'unicorn' with prompt index 0 is not in the suite"):
        prepare_external_run("dreambench", tmp_path / "unknown", tmp_path / "o2", data_root=MINI)


def test_cli_score_and_bad_input(scored_run, capsys):
    from bench.cli import main

    store, _ = scored_run
    assert main(["score", str(store.root), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "dino/tiny-random" in out and "clip_t/tiny-random" in out
    assert main(["score", "--images", "somewhere"]) == 2
    assert "--images needs --suite" in capsys.readouterr().err
    assert main(["score", str(store.root), "--metrics", "clipp"]) == 2
    assert "did you mean 'clip'" in capsys.readouterr().err


def test_the_console_summary_gives_each_mean_with_its_interval_over_the_values_that_exist(scored_run):
    from bench.score_cli import summary_lines
    from bench.stats.analysis import Settings, analyse
    from bench.stats.table import from_scores

    store, df = scored_run
    df = df.copy()
    clip_t = df.index[df["metric"] == "clip_t/tiny-random"]
    df.loc[clip_t[::3], "value"] = np.nan                   # a third could not be computed
    df.loc[df["metric"] == "dino/tiny-random", "value"] = np.nan
    lines = summary_lines(df, store.read_run())
    by_metric = {line.split()[0]: line for line in lines[:-1]}
    assert set(by_metric) == IDS
    kept = len(clip_t) - len(clip_t[::3])
    assert f"{kept} of {len(clip_t)} images have a value" in by_metric["clip_t/tiny-random"]
    assert "no value: 0 of" in by_metric["dino/tiny-random"]
    expected = {r["metric"]: r for r in analyse(from_scores(df.assign(run="x")), Settings())}
    for metric in ("clip_t/tiny-random", "clip_i/tiny-random"):
        row = expected[metric]
        assert f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]" in by_metric[metric]
    assert expected["clip_t/tiny-random"]["mean"] != pytest.approx(df.loc[clip_t, "value"].fillna(0).mean())
    assert "cluster bootstrap over subjects" in lines[-1]
    assert all(line.isascii() for line in lines)            # a console without UTF-8 prints it too
