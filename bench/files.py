"""Small file helpers shared by the harness: content hashes and the cache folder."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable


def cache_root() -> Path:
    """Where derived files go (tokenizer, masks, tiny test models): $BENCH_CACHE, else
    <system temp>/bench-cache."""
    return Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "bench-cache"))


def _update(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    _update(h, Path(path))
    return h.hexdigest()


def files_sha256(paths: Iterable[Path], names_relative_to: Path | None = None) -> str:
    """sha256 over several files, each preceded by its name (relative to a folder if given)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update((p.relative_to(names_relative_to).as_posix() if names_relative_to else p.name).encode())
        _update(h, p)
    return h.hexdigest()


# ---- names that become path parts, and temporary files ------------------------------------
def check_path_part(name: str, where: str, what: str = "name") -> str:
    """Refuse a name (from a data file) that could leave its folder when used as a path part:
    empty, '.', '..', a separator, a NUL, a leading '~', or an absolute path. ``where`` names
    the file (and line) it came from."""
    bad = (not isinstance(name, str) or name.strip() != name or name in ("", ".", "..")
           or any(c in name for c in ("/", "\\", "\0")) or name.startswith("~")
           or any(ord(c) < 32 for c in name) or os.path.isabs(name))
    if bad:
        raise _bench_error(f"{where}: {what} {name!r} cannot be a folder name (no separators, "
                           "'..', NUL or control characters, leading/trailing spaces or '~')")
    return name


def _bench_error(message: str):
    from bench import BenchError
    return BenchError(message)


_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")


def temporary_name(path: Path) -> Path:
    """The writer's temporary file for ``path``: ``.<name>.<pid>.tmp`` in the same folder, so
    that no process ever touches another live process's temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # exists, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(folder: Path, recursive: bool = False) -> int:
    """Delete temporary files (``.<name>.<pid>.tmp``) whose writer process is gone; files of
    live processes (another shard writing now) are left alone. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        match = _TEMP.match(path.name)
        if match and not pid_alive(int(match["pid"])):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to a temporary name next to ``path`` and rename it into place. On any
    failure (a full disk, a permission error, an interrupt) the temporary file is removed."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- weight files ---------------------------------------------------------------------------
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: accelerate's save_state files that are not model weights (never loaded as weights)
TRAINING_STATE_PREFIXES = ("optimizer", "scheduler", "sampler", "random_states", "scaler")
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not a well-formed .safetensors file (random bytes, a truncated
    download, offsets or shapes that do not fit), reading only its header. One-line error."""
    import json

    path = Path(path)

    def bad(why: str):
        return _bench_error(f"{path}: not a valid .safetensors file ({why})")

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        n = int.from_bytes(head, "little")
        if n < 2 or 8 + n > size or n > 100 * 2**20:
            raise bad(f"header length {n} does not fit the file's {size} bytes")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except ValueError:
            raise bad("its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            itemsize = _SAFETENSORS_ITEMSIZE[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has no valid dtype, shape and data_offsets") from None
        count = 1
        for d in shape:
            if d < 0:
                raise bad(f"tensor {name!r} has a negative dimension")
            count *= d
        if not 0 <= start <= end <= data_size or end - start != count * itemsize:
            raise bad(f"tensor {name!r}: its data_offsets do not match its shape or the file size")


def weight_files(path: Path | str, option: str = "--adapter") -> list[Path]:
    """The weight files a checkpoint path names: the file itself, or the weight files directly
    inside a folder (not below it; training-state files excluded). Each .safetensors header is
    checked. Only these are hashed for a run's identity (never a whole folder tree)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise _bench_error(f"{option} {path}: no such file or folder")
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise _bench_error(f"{option} {path}: not a weight file ({', '.join(WEIGHT_SUFFIXES)})")
        files = [path]
    elif path.is_dir():
        try:
            files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()
                           and not p.name.startswith(TRAINING_STATE_PREFIXES))
        except OSError as exc:
            raise _bench_error(f"{option} {path}: cannot list the folder ({exc.strerror})") from None
        if not files:
            raise _bench_error(f"{option} {path}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in this folder")
    else:
        raise _bench_error(f"{option} {path}: not a regular file or folder")
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    return files
