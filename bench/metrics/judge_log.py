"""``judge_answers.jsonl``: every answer a judge gave, durable before the next request, and read back
so that a stopped or killed pass asks only what it never received (docs/judge.md, "Resuming").

Each record names its request by a hash of everything that decides the answer (the metric
version, the kind, the image's bytes, the item's context, the repeat and the attempt): a record is
reused only for exactly that request. A line torn by a kill is skipped (and the file is ended with
a newline before the next record is appended, so no record is glued onto it).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

from bench import BenchError
from bench.limits import MAX_JSONL_LINE_BYTES


def request_id(*parts) -> str:
    """A stable id of one question put to the judge (the hash of its deciding parts)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode("utf-8")).hexdigest()[:32]


def file_digest(path) -> str:
    """sha256 of a file's bytes (a PIL image: of its pixels), the judged image's identity."""
    digest = hashlib.sha256()
    if hasattr(path, "tobytes"):
        digest.update(path.tobytes())
        return digest.hexdigest()[:32]
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


class AnswerLog:
    """Append-only answers file with an index of the requests it already holds."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.known: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BenchError(f"judge answers file {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise BenchError(f"judge answers file {self.path} is not a regular file; move it aside")
        with open(self.path, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if not line.strip() or len(line) > MAX_JSONL_LINE_BYTES:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue                                   # torn by a kill, or edited: asked again
            if isinstance(record, dict) and isinstance(record.get("request"), str):
                self.known[record["request"]] = record
        if data and not data.endswith(b"\n"):
            with open(self.path, "ab") as f:               # end the torn line; the next record starts clean
                f.write(b"\n")

    def get(self, request: str) -> dict | None:
        return self.known.get(request)

    def append(self, record: dict) -> None:
        """Write one record and fsync it: it survives a kill that comes after this returns."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if isinstance(record.get("request"), str):
                self.known[record["request"]] = record
