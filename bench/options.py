"""Helpers below both the runner and scoring: option parsing, input checks and device choice.

They live here, not in :mod:`bench.runner`, so that scoring and data commands can use them
without importing the runner (and the runner can import scoring without a circle).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench import BenchError

_ZERO_PADDED = re.compile(r"[+-]?0\d+")

#: Seeds are generator seeds scaled per image index (bench.types.request_seed): keep them in
#: 0..2**31-1 so that every derived seed fits a 64-bit generator seed.
MAX_SEED = 2**31 - 1
#: More seeds than this is certainly a typo (the published protocols use 6); refusing it also
#: keeps `--seeds 0-999999999` from building a list of a billion numbers.
MAX_SEEDS = 10_000


def split_list(text: str, option: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c'] (items stripped). An empty item ('a,,b', 'a,', ',a', '') is
    refused: it is a typo, never a choice, and silently dropping it hides one."""
    items = [part.strip() for part in str(text).split(",")]
    empty = [i for i, item in enumerate(items, start=1) if not item]
    if empty:
        raise BenchError(f"{option} {text!r}: item {empty[0]} of {len(items)} is empty (write a comma-separated "
                         "list without empty items, e.g. a,b)")
    return items


def as_list(value, option: str = "--suite-option") -> list[str] | None:
    """A list option given as a list or as one comma-separated string (``--param subjects=a,b``);
    one value that the option parser turned into a number is a list of one. An empty item
    (``a,,b``) is refused (bench.options.split_list)."""
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        # `prompt_indices=` must not silently mean "all of them": leave the option out for that.
        raise BenchError(f"{option} {value!r}: the list is empty (leave the option out to use all)")
    if isinstance(value, str):
        return split_list(value, option)
    if not isinstance(value, (list, tuple)):
        value = [value]
    items = [str(v).strip() for v in value]
    if any(not item for item in items):
        raise BenchError(f"{option} {value!r}: a list item is empty")
    return items


def check_float(value, option: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False):
    """Refuse a float option that is NaN, infinite or outside [low, high] (open ends when asked);
    None passes (the default)."""
    import math

    if value is None:
        return None
    if not math.isfinite(value):
        raise BenchError(f"{option} {value}: must be a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        raise BenchError(f"{option} {value:g}: must be {' and '.join(x for x in (lo, hi) if x)}")
    return value


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """'0-5' -> (0..5); '0,2,4' -> (0, 2, 4); '3' -> (3,). Bounded: each seed in 0..MAX_SEED,
    at most MAX_SEEDS seeds, checked before any list is built."""
    ranges: list[tuple[int, int]] = []
    if not str(text).strip():
        raise BenchError(f"{option} {text!r} names no seed")
    parts = split_list(text, option)
    try:
        for part in parts:
            lo, sep, hi = part.partition("-")
            lo, hi = (int(lo), int(hi)) if sep else (int(part), int(part))
            ranges.append((lo, hi))
    except ValueError:
        raise BenchError(f"{option} {text!r}: expected a range like 0-5 or a list like 0,2,4 "
                         f"(seeds are integers 0..{MAX_SEED})") from None
    if not ranges:
        raise BenchError(f"{option} {text!r} names no seed")
    for lo, hi in ranges:
        if not (0 <= lo <= MAX_SEED and 0 <= hi <= MAX_SEED):
            raise BenchError(f"{option} {text!r}: seeds must be integers in 0..{MAX_SEED}")
        if hi < lo:
            raise BenchError(f"{option} {text!r}: the range {lo}-{hi} is empty (write low-high)")
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_SEEDS:
        raise BenchError(f"{option} {text!r}: more than {MAX_SEEDS} seeds (the protocols use 6)")
    return tuple(sorted({s for lo, hi in ranges for s in range(lo, hi + 1)}))


def parse_params(items: list[str], option: str = "--param") -> dict:
    """KEY=VALUE pairs of a repeatable option; values parsed as int, float, bool or left as strings.

    A number written with leading zeros (an id such as ``000001``) stays a string, so that ids
    keep their form."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BenchError(f"{option} {item!r}: expected KEY=VALUE")
        if _ZERO_PADDED.fullmatch(value.strip()):
            out[key] = value.strip()
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return out


def check_int(value, option: str, low: int = 1, high: int | None = None, multiple_of: int | None = None):
    """Refuse an integer option outside low..high (or not a multiple); None passes (default)."""
    if value is None:
        return None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BenchError(f"{option} {value}: must be {bound}")
    if multiple_of and value % multiple_of:
        raise BenchError(f"{option} {value}: must be a multiple of {multiple_of}")
    return value


def check_output_dir(path: Path | str, option: str = "--out") -> Path:
    """A folder we may create or write into: not a file, and its nearest existing ancestor
    writable. Nothing is created here."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BenchError(f"{option} {path}: is a file, expected a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BenchError(f"{option} {path}: {probe} is a file, so the folder cannot be created")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {path}: {probe} is not writable")
    return path


#: What a run directory holds before its run.json is written (a shard starting beside another).
RUN_DIR_ENTRIES = frozenset({"run.json", ".run.lock", "generations", "images", "scores.parquet"})


def check_run_dir(path: Path | str, option: str = "--out") -> Path:
    """check_output_dir, and a folder that already exists is either a run directory (it has a
    run.json, or only what a starting run writes) or empty: a run is never spread over a folder
    that holds other files (``--out /`` or ``--out ~`` would write run.json and generations/
    among them). Nothing is created here."""
    path = check_output_dir(path, option)
    if path.is_dir() and not (path / "run.json").exists():
        foreign = sorted(p.name for p in path.iterdir()
                         if p.name not in RUN_DIR_ENTRIES and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise BenchError(f"{option} {path}: the folder holds other files ({shown}) and no run.json, so it is "
                             "not a run directory; name a new or empty folder")
    return path


def check_output_file(path: Path | str, option: str) -> Path:
    """A file we may replace by an atomic rename: absent or a regular file (a rename over
    /dev/null, a FIFO or a folder would replace the device or fail half way), in a folder that
    exists or can be created. Nothing is created here."""
    import stat

    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise BenchError(f"{option} {path}: {exc.strerror or exc}") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise BenchError(f"{option} {path}: is {kind}; name a file to write")
    check_output_dir(path.parent, option)
    return path


def unique_paths(paths, option: str) -> list[Path]:
    """Paths in their given order without repeats (the same folder named twice, also through
    another spelling or a symlink, would count its contents twice): a repeat is dropped with
    one warning naming it."""
    import sys

    out, seen = [], {}
    for given in paths:
        path = Path(given).expanduser()
        real = path.resolve()
        if real in seen:
            print(f"warning: {option}: {given} is the same folder as {seen[real]}; it is counted once",
                  file=sys.stderr)
            continue
        seen[real] = given
        out.append(path)
    return out


def check_input_dir(path: Path | str | None, option: str) -> Path | None:
    """An existing folder to read from (None passes)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.exists():
        raise BenchError(f"{option} {path}: no such folder")
    if not path.is_dir():
        raise BenchError(f"{option} {path}: is a file, expected a folder")
    return path


def default_device() -> str:
    """cuda when available, else cpu. Under a launcher that starts one process per GPU
    (``accelerate launch``, ``torchrun``: LOCAL_RANK set), each process takes its own GPU,
    ``cuda:<LOCAL_RANK modulo the GPUs this machine has>``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local = os.environ.get("LOCAL_RANK", "")
    if local.isdigit() and torch.cuda.device_count() > 1:
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return "cuda"


def check_device(device: str | None, option: str = "--device") -> str | None:
    """cpu, cuda, cuda:N or mps, and available on this machine (None passes: the default)."""
    if device is None:
        return None
    import re

    if not re.fullmatch(r"cpu|mps|cuda(:\d{1,4})?", device):
        raise BenchError(f"{option} {device!r}: expected cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"{option} {device}: CUDA is not available on this machine (use --device cpu)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise BenchError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise BenchError(f"{option} mps: MPS is not available on this machine")
    return device
