"""Benchmark suites: one loader per module (dreambench, dreamedit, fastcomposer)."""

from __future__ import annotations

from pathlib import Path

from bench import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_suite(name: str, data_root: Path | str | None = None, mini: bool = False, **options):
    """Build a suite by registry name.

    data_root: an explicit copy of the data; otherwise the embedded mini copy when ``mini``
    (the smoke preset), else the suite's default download location under datasets/.
    """
    from bench.registry import SUITES

    cls = SUITES.get(name).load()
    if data_root is not None:
        root = Path(data_root).expanduser()
    elif mini:
        root = REPO_ROOT / cls.mini_root
    else:
        root = REPO_ROOT / cls.default_root
    if not root.exists():
        how = (f"run `python -m bench data fetch {name}`, or pass --data-root" if data_root is None
               else "check --data-root")
        raise BenchError(f"data for suite {name!r} not found at {root}: {how}")
    if not root.is_dir():
        raise BenchError(f"--data-root {root}: is a file, expected the folder of suite {name!r}")
    return cls(root, **options)
