"""A run directory on disk.

Layout::

    RUN_DIR/run.json                      identity (what makes images differ), plan, provenance
    RUN_DIR/generations/rank-00000.jsonl  one line per finished image, one file per shard
    RUN_DIR/generations/rank-00000.lock   the advisory lock of the process writing that shard
    RUN_DIR/generations/rank-00000.lease  its lease: host, pid, rank, world size; mtime = heartbeat
    RUN_DIR/images/<subject>/<prompt>/s<seed>/i<k>.png
    RUN_DIR/scores.parquet                written by the scoring stage

Writing one image: save to ``.<name>.<pid>@<host>.tmp`` in the target folder, fsync, rename,
then append the jsonl line (with the image's size, mtime and sha256) and flush it. A killed
process therefore leaves at worst a temporary file (removed by a later process once its writer is
provably gone: same host and dead pid, or another host and older than
bench.files.STALE_TEMPORARY_AGE_S) or a finished image without its line (regenerated). Each shard
appends only to its own ``rank-NNNNN.jsonl`` under a ShardLock (bench/shard_lock.py: an advisory ``flock``
plus a lease file with host, pid, world size and a heartbeat, for folders shared by several
machines), so several processes, on one machine or many, write one run; the same shard live
anywhere, or a live shard of another world size, is refused. Readers merge the files.

Integrity (``verified_records``): a record counts only if its image exists as a regular file
with the recorded size, and either its mtime is the recorded one or its sha256 is (``verify``:
always the sha256). Malformed lines (torn by a kill, not UTF-8, not JSON, missing fields) are
skipped with one warning that counts them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

from bench import BenchError
from bench.limits import MAX_JSONL_LINE_BYTES
from bench.files import (check_path_part, file_sha256, name_os_error, read_json, remove_stale_temporaries,
                         write_atomic)
from bench.output_guard import require_regular
from bench.shard_lock import LEASE_EXPIRY_S, LEASE_HEARTBEAT_S, ShardLock, lease_is_live  # noqa: F401 (their home was here)

RUN_FORMAT = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _diff(old, new, prefix="") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _valid_record(rec) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("key"), str) and rec["key"].count("/") >= 4
            and isinstance(rec.get("image"), str) and rec["image"] != ""
            and isinstance(rec.get("sha256"), str) and bool(_SHA256.match(rec["sha256"]))
            and isinstance(rec.get("seed"), int) and not isinstance(rec.get("seed"), bool)
            and (rec.get("bytes") is None or (isinstance(rec["bytes"], int) and rec["bytes"] >= 0)))


#: records() per generations folder in this process: (the rank files' names, sizes, mtimes), records
_RECORDS: dict[str, tuple[tuple, dict]] = {}


# ---- run.json field types -------------------------------------------------------------------
_NUMBER = (int, float)
#: Dotted field -> the JSON types it may have (None: null allowed). Fields not listed are free.
RUN_FIELDS: dict[str, tuple] = {
    "identity": (dict,), "identity.method_params": (dict,), "identity.suite": (dict,),
    "identity.suite.options": (dict,), "suite": (dict,), "suite.name": (str,), "suite.root": (str, None),
    "suite.options": (dict, None), "plan": (dict,), "plan.seeds": (list,), "plan.images_per_prompt": (int, None),
    "plan.subjects": (list, None), "plan.limit": (int, None), "plan.images_per_seed": (int, None),
    "plan.total": (int, None), "plan.skipped_without_mask": (list, None), "metrics": (list, None),
    "metric_preset": (str, None), "metric_params": (dict, None), "random_weights": (bool, None),
    "method": (dict, str, None), "weights_status": (str, dict, None), "resumed_at": (list,),
}
#: Lists whose items must be of one type.
RUN_LIST_ITEMS: dict[str, tuple] = {"plan.seeds": (int,), "metrics": (str,), "plan.subjects": (str,),
                                    "resumed_at": (str,)}


def _json_type(value, allowed: tuple) -> bool:
    for t in allowed:
        if t is None and value is None:
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t not in (int, None) and isinstance(value, t):
            return True
    return False


def _type_names(allowed: tuple) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true/false",
             float: "a number", None: "null"}
    return " or ".join(names[t] for t in allowed)


def check_run_fields(data: dict, path: Path) -> None:
    """Refuse a run.json whose fields have the wrong JSON types (one line naming the field)."""
    for dotted, allowed in RUN_FIELDS.items():
        value, present = data, True
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                present = False
                break
            value = value[part]
        if not present:
            continue
        if not _json_type(value, allowed):
            raise BenchError(f"{path}: field '{dotted}' is {type(value).__name__} {str(value)[:40]!r}, expected "
                             f"{_type_names(allowed)}; the file was edited or is not a run of this version: "
                             "restore it or make the run again")
        items = RUN_LIST_ITEMS.get(dotted)
        if items and isinstance(value, list):
            bad = next((v for v in value if not _json_type(v, items)), "<none>")
            if bad != "<none>":
                raise BenchError(f"{path}: field '{dotted}' holds {bad!r}, expected {_type_names(items)} items; "
                                 "restore the file or make the run again")


class RunStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.run_json = self.root / "run.json"
        self.images_dir = self.root / "images"
        self.generations_dir = self.root / "generations"
        self.scores_path = self.root / "scores.parquet"
        self._warned_malformed = False

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open_for_run(cls, root: Path | str, identity: dict, info: dict) -> "RunStore":
        """Create the run, or reopen it to resume. ``identity`` holds everything that changes
        the image of a given key; a run directory recorded with a different identity is refused.
        ``info`` (plan, provenance) is merged into run.json: plans accumulate across resumes."""
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        with store._run_lock():
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
        require_regular(store.run_json, "the run file")        # a FIFO would block the read
        if not store.run_json.is_file():
            raise BenchError(f"{store.root} is not a run directory: {store.run_json} is missing")
        return store

    def read_run(self) -> dict:
        """run.json, bounded (bench.limits) and with the type of every field a command reads
        checked (RUN_FIELDS): a hand-edited or foreign file is one line naming the field."""
        data = read_json(self.run_json, "the run file")
        if not isinstance(data, dict):
            raise BenchError(f"cannot read {self.run_json}: not a JSON object")
        check_run_fields(data, self.run_json)
        return data

    @contextmanager
    def _run_lock(self):
        """Serialise read-modify-write of run.json between processes (blocking flock)."""
        import fcntl

        import errno

        fd = os.open(self.root / ".run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:          # a shared filesystem without locks: the update is one rename
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
            yield
        finally:
            os.close(fd)

    def update_run(self, **fields) -> None:
        with self._run_lock():
            data = self.read_run()
            data.update(fields)
            _write_json_atomic(self.run_json, data)

    def read_scores(self):
        """scores.parquet as a DataFrame; a file over bench.limits.MAX_PARQUET_BYTES, not a
        parquet file (random bytes, truncated) or without the score columns is one BenchError
        naming it and the command that rewrites it."""
        import pandas as pd

        from bench.limits import MAX_PARQUET_BYTES

        path = self.scores_path
        fix = f"delete it and run `python -m bench score {self.root}` to rewrite it"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BenchError(f"{self.root} has no scores.parquet: run `python -m bench score {self.root}` first") from None
        require_regular(path, "scores file")
        if size > MAX_PARQUET_BYTES:
            raise BenchError(f"{path}: {size} bytes, over the limit of {MAX_PARQUET_BYTES} (bench.limits); {fix}")
        try:
            with open(path, "rb") as handle:        # Python opens it: a non-UTF-8 name under LC_ALL=C still works
                df = pd.read_parquet(handle)
        except OSError as exc:
            if getattr(exc, "errno", None) is not None:
                raise
            raise BenchError(f"cannot read {path}: not a parquet file ({' '.join(str(exc).split())[:200]}); {fix}") from None
        except Exception as exc:           # pyarrow's ArrowInvalid and kin: a foreign or torn file
            raise BenchError(f"cannot read {path}: not a parquet file ({type(exc).__name__}); {fix}") from None
        missing = [c for c in ("key", "metric", "value") if c not in df.columns]
        if missing:
            raise BenchError(f"{path} lacks the column(s) {', '.join(missing)} of a scores file; {fix}")
        return df

    def remove_stale_temporaries(self) -> int:
        """Remove temporary files left by dead processes (never those of a live writer)."""
        return (remove_stale_temporaries(self.root) + remove_stale_temporaries(self.generations_dir)
                + remove_stale_temporaries(self.images_dir, recursive=True))

    def lock_shard(self, rank: int, world: int = 1) -> ShardLock:
        self.generations_dir.mkdir(parents=True, exist_ok=True)
        return ShardLock(self.generations_dir, rank, world, f"shard {rank}/{world} of {self.root}")

    # ---- images and records --------------------------------------------------------------
    def image_path(self, key: str) -> Path:
        """images/<key without the suite>.png; keys are suite/subject/prompt/s<seed>/i<k>.
        Every part must be a plain folder name: nothing is ever written outside images/."""
        parts = key.split("/")
        for part in parts[1:]:
            check_path_part(part, f"image key {key!r}", "part")
        return self.images_dir.joinpath(*parts[1:]).with_suffix(".png")

    def record_path(self, record: dict) -> Path:
        """The image file of a record (relative to the run, or absolute for external images)."""
        return self.root / record["image"]

    def records(self) -> dict[str, dict]:
        """Finished images by key, merged over all rank files (last line wins). Malformed lines
        are skipped; one warning (per store) counts them. Parsed once per process while the rank
        files keep their size and mtime (a report asks several times for 18,000 records)."""
        if not self.generations_dir.is_dir():
            return {}
        files = sorted(self.generations_dir.glob("rank-*.jsonl"))
        try:
            stamp = tuple((p.name, st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
        except OSError:
            stamp = None
        cached = _RECORDS.get(str(self.generations_dir.resolve()))
        if stamp is not None and cached is not None and cached[0] == stamp:
            return dict(cached[1])
        out = self._read_records()
        if stamp is not None:
            _RECORDS[str(self.generations_dir.resolve())] = (stamp, out)
        return dict(out)

    def _read_records(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        malformed = 0
        for path in sorted(self.generations_dir.glob("rank-*.jsonl")):
            require_regular(path, "records file")       # a FIFO would block the read forever
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise BenchError(f"cannot read {path}: {exc.strerror}") from None
            for line in raw.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    if len(line) > MAX_JSONL_LINE_BYTES:     # bench.limits: never a record
                        raise ValueError("too long")
                    rec = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):  # torn by a kill, garbage, not UTF-8, nested absurdly
                    malformed += 1
                    continue
                if not _valid_record(rec):
                    malformed += 1
                    continue
                out[rec["key"]] = rec
        if malformed and not self._warned_malformed:
            self._warned_malformed = True
            print(f"warning: skipped {malformed} malformed line(s) in {self.generations_dir} (cut by a kill, "
                  "not UTF-8, not JSON, or missing key/seed/image/sha256); their images count as not done",
                  file=sys.stderr)
        return out

    def check_record(self, record: dict, verify: bool = False) -> str | None:
        """Why a record's image cannot be trusted, or None if it can.

        Checked: a regular file, of the recorded size; then its sha256 unless the file still has
        the recorded mtime (``verify``: the sha256 always)."""
        path = os.path.join(self.root, record["image"])      # a string: 18,000 Path objects cost a second
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"missing ({path})"
        except OSError as exc:
            return f"unreadable ({path}: {exc.strerror})"
        if not stat.S_ISREG(st.st_mode):
            return f"not a regular file ({path})"
        size = record.get("bytes")
        if size is not None and st.st_size != size:
            return f"{st.st_size} bytes, {size} recorded: truncated or replaced ({path})"
        if verify or size is None or record.get("mtime_ns") != st.st_mtime_ns:
            try:
                digest = file_sha256(path)
            except OSError as exc:
                return f"unreadable ({path}: {exc.strerror})"
            if digest != record["sha256"]:
                return f"content differs from its recorded sha256: replaced ({path})"
        return None

    def verified_records(self, verify: bool = False, keys=None) -> tuple[dict[str, dict], dict[str, str]]:
        """(records whose image checks out, {key: what is wrong} for the others); ``keys``: check
        only the records of these keys (a shard's own), the others are left out of both."""
        good, bad = {}, {}
        records = self.records()
        if keys is not None:
            records = {key: records[key] for key in keys if key in records}
        for key, rec in records.items():
            problem = self.check_record(rec, verify)
            if problem is None:
                good[key] = rec
            else:
                bad[key] = problem
        return good, bad

    def done_keys(self, verify: bool = False) -> set[str]:
        return set(self.verified_records(verify)[0])

    def writer(self, rank: int = 0) -> "GenerationWriter":
        return GenerationWriter(self, rank)


class GenerationWriter:
    def __init__(self, store: RunStore, rank: int):
        self.store = store
        store.generations_dir.mkdir(parents=True, exist_ok=True)
        self.path = require_regular(store.generations_dir / f"rank-{rank:05d}.jsonl", "records file")
        self._file = open(self.path, "a+b")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":     # a line cut by a kill: end it, readers skip it
                self._file.write(b"\n")
        self._file.seek(0, os.SEEK_END)

    def write(self, key: str, seed: int, image: Image.Image, seconds: float, extras: dict | None = None,
              data: bytes | None = None) -> dict:
        """Write one image atomically, then append its record. ``data``: the PNG bytes when
        already encoded."""
        path = self.store.image_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_png(image) if data is None else data
        iterations = self._write_iterations(path, image.info.get("bench_iterations") or ())
        write_atomic(path, data)
        record = {"key": key, "seed": seed, "image": path.relative_to(self.store.root).as_posix(),
                  "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                  "mtime_ns": path.stat().st_mtime_ns, "seconds": round(seconds, 4), **(extras or {})}
        if iterations:
            record["iterations"] = iterations
        try:
            self._file.write((json.dumps(record, default=str) + "\n").encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:                 # a full disk: the error names the records file
            raise name_os_error(exc, self.path)
        return record

    def _write_iterations(self, path: Path, images) -> list[dict]:
        """Every iteration's output of an iterating method (``image.info["bench_iterations"]``,
        first to last), saved next to the image as ``<name>.iter<k>.png`` (k from 1)."""
        out = []
        for k, iteration in enumerate(images, start=1):
            target = path.with_name(f"{path.stem}.iter{k}.png")
            data = encode_png(iteration)
            write_atomic(target, data)
            out.append({"image": target.relative_to(self.store.root).as_posix(),
                        "sha256": hashlib.sha256(data).hexdigest()})
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_runs(paths: list[Path]) -> Iterator[RunStore]:
    for p in paths:
        yield RunStore.open_existing(p)


def weights_status(run: dict) -> str:
    """What a run's weights are, from its run.json: "random weights" (a preset), the method's own
    status (e.g. an untrained adapter), or "pretrained". Reports and the console say the same."""
    parts = []
    if run.get("random_weights"):
        parts.append("random weights")
    status = run.get("weights_status")
    if status:
        # a method's own status may already say "random weights": keep each phrase once
        parts += [p.strip() for p in str(status).split(",") if p.strip() and p.strip() not in parts]
    scored = run.get("scored") if isinstance(run.get("scored"), dict) else {}
    if not any("random weights" in p for p in parts) and (scored.get("metric_preset") or run.get("metric_preset")):
        # e.g. external images scored with --metric-preset tiny: the numbers are as meaningless
        parts.append("random weights (metric models)")
    return ", ".join(parts) or "pretrained"
