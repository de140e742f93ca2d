"""Images made elsewhere imported as a run (`bench score --images DIR`): their records point at the
files in place (not copied), so the run directory works with `bench score`, `bench report` and
`bench check` like a generated one.

DIR holds the same layout as a run's images/::

    DIR/<subject>/<prompt index>/s<seed>/i<k>.png     (also .jpg/.jpeg/.webp; prompt index 0-based,
                                                        "003" or "3")

or DIR is a CSV manifest with a ``path`` column (relative to the CSV's folder, or absolute) and
either a ``key`` column (``<suite>/<subject>/<prompt index>/s<seed>/i<k>``) or the columns
``subject, prompt_index, seed, image_index``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from bench import BenchError
from bench.files import file_sha256, write_atomic
from bench.images import check_image
from bench.scoring import metric_names
from bench.store import RunStore
from bench.types import Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_LAYOUT = re.compile(r"^(?P<subject>[^/]+)/(?P<prompt>\d+)/s(?P<seed>-?\d+)/i(?P<index>\d+)$")


def find_external_images(source: Path, samples: list[Sample]) -> dict[str, tuple[Path, int]]:
    """key -> (image path, seed) from a folder in the documented layout or a CSV manifest."""
    by_cell = {(s.subject, s.prompt_index): s for s in samples}

    def key_for(subject: str, prompt: str, seed: str, index: str, where: str) -> tuple[str, int]:
        try:
            prompt_index, seed_value, image_index = int(prompt), int(seed), int(index)
        except ValueError:
            raise BenchError(f"{where}: prompt index, seed and image index must be integers") from None
        sample = by_cell.get((subject, prompt_index))
        if sample is None:
            raise BenchError(f"{where}: subject {subject!r} with prompt index {prompt_index} is not in the suite")
        return f"{sample.cell}/s{seed_value}/i{image_index}", seed_value

    found: dict[str, tuple[Path, int]] = {}
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise BenchError(f"--images {source}: expected a folder or a .csv manifest")
        try:
            with open(source, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BenchError(f"--images {source}: not a UTF-8 CSV manifest ({exc})") from None
        for n, row in enumerate(rows, start=2):
            where = f"{source}:{n}"
            if not row.get("path"):
                raise BenchError(f"{where}: the manifest needs a 'path' column")
            if row.get("key"):
                parts = row["key"].strip().split("/")
                match = _LAYOUT.match("/".join(parts[-4:])) if len(parts) >= 4 else None
                if match is None:
                    raise BenchError(f"{where}: key {row['key']!r} is not <suite>/<subject>/<prompt>/s<seed>/i<k>")
                fields = match.groupdict()
                key, seed = key_for(fields["subject"], fields["prompt"], fields["seed"], fields["index"], where)
            else:
                if any(not row.get(c) for c in ("subject", "prompt_index", "seed", "image_index")):
                    raise BenchError(f"{where}: give 'key' or all of subject, prompt_index, seed, image_index")
                key, seed = key_for(row["subject"], row["prompt_index"], row["seed"], row["image_index"], where)
            path = Path(row["path"]).expanduser()
            path = path if path.is_absolute() else source.parent / path
            if not path.exists():
                raise BenchError(f"{where}: image {path} does not exist")
            try:
                check_image(path)                      # a regular, decodable image: not /dev/zero
            except BenchError as exc:
                raise BenchError(f"{where}: {exc}") from None
            if key in found:
                raise BenchError(f"{where}: a second image for {key} (also {found[key][0]})")
            found[key] = (path.resolve(), seed)
    elif source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            relative = path.relative_to(source).with_suffix("").as_posix()
            match = _LAYOUT.match(relative)
            if match is None:
                raise BenchError(f"{path}: not in the layout <subject>/<prompt index>/s<seed>/i<k>.png")
            fields = match.groupdict()
            key, seed = key_for(fields["subject"], fields["prompt"], fields["seed"], fields["index"], str(path))
            check_image(path)
            if key in found:
                raise BenchError(f"{path}: a second image for {key} (also {found[key][0]})")
            found[key] = (path.resolve(), seed)
    else:
        raise BenchError(f"--images {source}: no such folder or file")
    if not found:
        raise BenchError(f"--images {source}: no images found")
    return found


def prepare_external_run(suite_name: str, images: Path | str, out: Path | str, data_root=None, mini: bool = False,
                         suite_options: dict | None = None, name: str | None = None, metrics=None,
                         metric_preset: str | None = None) -> RunStore:
    """A run directory whose records point at images made elsewhere (referenced in place)."""
    from bench.suites import load_suite

    images = Path(images).expanduser().resolve()
    options = dict(suite_options or {})
    suite = load_suite(suite_name, data_root, mini=mini, **options)
    found = find_external_images(images, suite.samples())
    label = name or (images.stem if images.is_file() else images.name)
    seeds = sorted({seed for _, seed in found.values()})
    identity = {"method": f"external:{label}", "images": str(images),
                "suite": {"name": suite_name, "version": suite.version, "options": options}}
    info = {"suite": {"name": suite_name, "root": str(suite.root.resolve()), "options": options},
            "plan": {"seeds": seeds, "total": len(found)},
            "metrics": metric_names(metrics) or list(suite.default_metrics), "metric_preset": metric_preset,
            "random_weights": False, "weights_status": "external images", "method": {"name": label}}
    store = RunStore.open_for_run(out, identity, info)
    store.generations_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, (path, seed) in sorted(found.items()):
        st = path.stat()
        lines.append(json.dumps({"key": key, "seed": seed, "image": str(path), "sha256": file_sha256(path),
                                 "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "seconds": None,
                                 "external": True}))
    records = store.generations_dir / "rank-00000.jsonl"
    with store.lock_shard(0):
        write_atomic(records, ("\n".join(lines) + "\n").encode("utf-8"))   # the folder's current content
    return store
