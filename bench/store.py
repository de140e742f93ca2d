"""A run directory on disk.

Layout::

    RUN_DIR/run.json                      identity (what makes images differ), plan, provenance
    RUN_DIR/generations/rank-00000.jsonl  one line per finished image, one file per process
    RUN_DIR/images/<subject>/<prompt>/s<seed>/i<k>.png
    RUN_DIR/scores.parquet                written by the scoring stage

Writing one image: save to a temporary name in the target folder, fsync, rename, then append
the jsonl line and flush it. A killed process therefore leaves at worst a stray temporary
file (removed on the next open) or a finished image without its line (regenerated). Each
process appends only to its own ``rank-NNNNN.jsonl``, so several processes (one per GPU) write
one run without locks; readers merge the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Iterator

from PIL import Image

from bench import BenchError

RUN_FORMAT = 1


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _diff(old, new, prefix="") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


class RunStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.run_json = self.root / "run.json"
        self.images_dir = self.root / "images"
        self.generations_dir = self.root / "generations"
        self.scores_path = self.root / "scores.parquet"

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open_for_run(cls, root: Path | str, identity: dict, info: dict) -> "RunStore":
        """Create the run, or reopen it to resume. ``identity`` holds everything that changes
        the image of a given key; a run directory recorded with a different identity is refused.
        ``info`` (plan, provenance) is merged into run.json: plans accumulate across resumes."""
        store = cls(root)
        store.check_identity(identity)
        if store.run_json.exists():
            data = store.read_run()
            history = data.setdefault("resumed_at", [])
            history.append(time.strftime("%Y-%m-%dT%H:%M:%S"))
            plan = data.get("plan", {})
            new_plan = info.get("plan", {})
            seeds = sorted(set(plan.get("seeds", [])) | set(new_plan.get("seeds", [])))
            data.update(info)
            data["plan"] = {**new_plan, "seeds": seeds}
        else:
            store.root.mkdir(parents=True, exist_ok=True)
            data = {"format": RUN_FORMAT, "identity": identity, **info,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write_json_atomic(store.run_json, data)
        store.remove_stale_temporaries()
        return store

    def check_identity(self, identity: dict) -> None:
        """Refuse (BenchError naming each difference) if this run was made with other settings."""
        if not self.run_json.exists():
            return
        recorded = self.read_run().get("identity", {})
        differences = _diff(recorded, json.loads(json.dumps(identity, default=str)))
        if differences:
            raise BenchError(f"{self.run_json} was made with different settings ({'; '.join(differences)}); "
                             f"use another --out or delete that run directory")

    @classmethod
    def open_existing(cls, root: Path | str) -> "RunStore":
        store = cls(root)
        if not store.run_json.exists():
            raise BenchError(f"{store.root} is not a run directory: {store.run_json} is missing")
        return store

    def read_run(self) -> dict:
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"cannot read {self.run_json}: {exc}") from None

    def update_run(self, **fields) -> None:
        data = self.read_run()
        data.update(fields)
        _write_json_atomic(self.run_json, data)

    def remove_stale_temporaries(self) -> None:
        if self.images_dir.exists():
            for tmp in self.images_dir.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    # ---- images and records --------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        """images/<key without the suite>.png; keys are suite/subject/prompt/s<seed>/i<k>."""
        parts = key.split("/")
        return self.images_dir.joinpath(*parts[1:]).with_suffix(".png")

    def records(self) -> dict[str, dict]:
        """Finished images by key, merged over all rank files (last line wins)."""
        out: dict[str, dict] = {}
        if not self.generations_dir.exists():
            return out
        for path in sorted(self.generations_dir.glob("rank-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(rec, dict) and "key" in rec:
                    out[rec["key"]] = rec
        return out

    def done_keys(self) -> set[str]:
        return {k for k, rec in self.records().items() if (self.root / rec["image"]).exists()}

    def writer(self, rank: int = 0) -> "GenerationWriter":
        return GenerationWriter(self, rank)


class GenerationWriter:
    def __init__(self, store: RunStore, rank: int):
        self.store = store
        store.generations_dir.mkdir(parents=True, exist_ok=True)
        self.path = store.generations_dir / f"rank-{rank:05d}.jsonl"
        self._file = open(self.path, "a+b")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":     # a line cut by a kill: end it, readers skip it
                self._file.write(b"\n")
        self._file.seek(0, os.SEEK_END)

    def write(self, key: str, seed: int, image: Image.Image, seconds: float, extras: dict | None = None) -> dict:
        path = self.store.image_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        record = {"key": key, "seed": seed, "image": path.relative_to(self.store.root).as_posix(),
                  "sha256": hashlib.sha256(data).hexdigest(), "seconds": round(seconds, 4),
                  **(extras or {})}
        self._file.write((json.dumps(record, default=str) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_runs(paths: list[Path]) -> Iterator[RunStore]:
    for p in paths:
        yield RunStore.open_existing(p)
