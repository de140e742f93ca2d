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
import hashlib
import json
import os
import re
import stat
from pathlib import Path

from bench import BenchError
from bench.files import write_atomic
from bench.images import check_header
from bench.scoring import metric_names
from bench.store import RunStore
from bench.types import Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_LAYOUT = re.compile(r"^(?P<subject>[^/]+)/(?P<prompt>\d+)/s(?P<seed>-?\d+)/i(?P<index>\d+)$")


def find_external_images(source: Path, samples: list[Sample]) -> dict[str, tuple[Path, int]]:
    """key -> (image path, seed) from a folder in the documented layout or a CSV manifest. Each file
    is only stat-ed here (a regular file); its content is checked where it is read (below, and by
    the scoring stage's full decode)."""
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
            if not path.is_file():                     # a stat: not /dev/zero, a FIFO or a folder
                raise BenchError(f"{where}: {path} is not a regular image file")
            if key in found:
                raise BenchError(f"{where}: a second image for {key} (also {found[key][0]})")
            found[key] = (path.resolve(), seed)
    elif source.is_dir():
        root = source.resolve()             # walked without following links to folders (rglob)
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            relative = path.relative_to(root).with_suffix("").as_posix()
            match = _LAYOUT.match(relative)
            if match is None:
                raise BenchError(f"{path}: not in the layout <subject>/<prompt index>/s<seed>/i<k>.png")
            fields = match.groupdict()
            key, seed = key_for(fields["subject"], fields["prompt"], fields["seed"], fields["index"], str(path))
            real = _regular_file(path)
            if key in found:
                raise BenchError(f"{path}: a second image for {key} (also {found[key][0]})")
            found[key] = (real, seed)
    else:
        raise BenchError(f"--images {source}: no such folder or file")
    if not found:
        raise BenchError(f"--images {source}: no images found")
    return found


def _regular_file(path: Path) -> Path:
    """``path`` (found under a resolved folder without following links to folders) resolved, after
    one lstat: itself unless it is a link; refused unless it is, or leads to, a regular file."""
    real = path
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            real = path.resolve()
            mode = os.stat(real).st_mode
    except (OSError, RuntimeError):     # a broken link, or a loop of links
        mode = 0
    if not stat.S_ISREG(mode):          # also refuses /dev/zero, FIFOs and folders before any read
        raise BenchError(f"{path} is not a regular image file")
    return real


def check_held_out(suite, names, params: dict) -> None:
    """references=held-out where a subject of ``suite`` has no photo held out: one line, before the
    images are read (bench.metrics.references.check_references; the run check of bench.plan)."""
    from bench.registry import METRICS

    suite_params = getattr(suite, "metric_params", dict)()
    for name in names:
        entry = METRICS.get(name)
        given = {**entry.params, **suite_params.get(name, {}), **params.get(name, {})}
        if given.get("references") == "held-out" and hasattr(entry.load(), "check_samples"):
            entry.load().check_samples(suite.samples(), **given)


def prepare_external_run(suite_name: str, images: Path | str, out: Path | str, data_root=None, mini: bool = False,
                         suite_options: dict | None = None, name: str | None = None, metrics=None,
                         metric_preset: str | None = None, verify: bool = False,
                         metric_params: dict | None = None) -> RunStore:
    """A run directory whose records point at images made elsewhere (referenced in place).

    Each file is read once: its sha256 (the score cache's key) and its header (an image's, of a size
    within bench.limits: bench.images.check_header) from the same bytes. A file the run already
    records with the same size and mtime keeps its recorded sha256 unread, as the resume check
    trusts it (``verify``: every file read again). The full decode happens once, where the scoring
    stage decodes the image for the metrics, with the same one-line errors. ``metric_params`` are
    checked against the suite first (e.g. references=held-out with no photo held out: one line,
    before any file is read or the run folder made)."""
    from bench.suites import load_suite

    images = Path(images).expanduser().resolve()
    options = dict(suite_options or {})
    suite = load_suite(suite_name, data_root, mini=mini, **options)
    check_held_out(suite, metric_names(metrics) or list(suite.default_metrics), metric_params or {})
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
    known = {} if verify else {(r.get("image"), r.get("bytes"), r.get("mtime_ns")): r.get("sha256")
                               for r in store.records().values() if r.get("external")}
    lines = []
    for key, (path, seed) in sorted(found.items()):
        image = str(path)
        st = os.stat(image)
        sha = known.get((image, st.st_size, st.st_mtime_ns))
        if not isinstance(sha, str):
            sha = _read_checked(path)
        lines.append(json.dumps({"key": key, "seed": seed, "image": image, "sha256": sha,
                                 "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "seconds": None,
                                 "external": True}))
    records = store.generations_dir / "rank-00000.jsonl"
    with store.lock_shard(0):
        write_atomic(records, ("\n".join(lines) + "\n").encode("utf-8"))   # the folder's current content
    return store


#: bytes read at a time while hashing; a file no longer than this has its header parsed from memory
_CHUNK = 1 << 20


def _read_checked(path: Path) -> str:
    """The file's sha256, after its header passed bench.images.check_header (a file up to _CHUNK
    bytes, as generated images are, is read once for both)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            first = f.read(_CHUNK)
            digest.update(first)
            whole = len(first) < _CHUNK
            for block in iter(lambda: f.read(_CHUNK), b""):
                whole = False
                digest.update(block)
    except OSError as exc:
        raise BenchError(f"cannot read image {path}: {exc.strerror or exc}") from None
    check_header(path, first if whole else None)
    return digest.hexdigest()
