"""Small file helpers shared by the harness: content hashes and the cache folder."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
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


#: A temporary file written by another host is removed only when it is older than this: no
#: image, record or score file takes anywhere near this long to write (docs/cluster.md).
STALE_TEMPORARY_AGE_S = 6 * 3600
#: ``.<name>.<pid>@<host>.tmp``; ``.<name>.<pid>.tmp`` (no host) is the older form, read as this host's.
_TEMP = re.compile(r"^\..+\.(?P<pid>\d{1,10})(?:@(?P<host>[A-Za-z0-9_-]{1,64}))?\.tmp$")


def hostname() -> str:
    """This machine's name as it appears in temporary and lease file names: the host name with
    anything but letters, digits, '-' and '_' replaced, at most 64 characters. The environment
    variable BENCH_HOSTNAME overrides it: tests use it to play two hosts on one machine."""
    import socket

    name = os.environ.get("BENCH_HOSTNAME") or socket.gethostname() or "localhost"
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if len(clean) <= 64:
        return clean
    # two long names that share their first 64 characters must stay two hosts: cut, plus a digest
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{clean[:47]}-{digest}"


def temporary_name(path: Path) -> Path:
    """The writer's temporary file for ``path``: ``.<name>.<pid>@<host>.tmp`` in the same folder,
    so that no process, on this machine or another sharing the folder, touches another live
    process's temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}@{hostname()}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here. 0 and negative numbers name process groups
    (kill(0) and kill(-1) would "succeed"), never a writer: they count as gone."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def writer_gone(pid: int, host: str | None, mtime: float, now: float | None = None) -> bool:
    """Whether the process that wrote a file is provably gone: on this host, its pid no longer
    exists; on another host (whose processes cannot be seen from here), the file is older than
    STALE_TEMPORARY_AGE_S."""
    import time

    if host is None or host == hostname():
        return not pid_alive(pid)
    return abs((time.time() if now is None else now) - mtime) > STALE_TEMPORARY_AGE_S   # a future mtime too


def remove_stale_temporaries(folder: Path, recursive: bool = False) -> int:
    """Delete temporary files (``.<name>.<pid>@<host>.tmp``) whose writer is provably gone
    (:func:`writer_gone`); those of a live writer (another shard, here or on another node) are
    left alone. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        match = _TEMP.match(path.name)
        if not match:
            continue
        try:
            gone = writer_gone(int(match["pid"]), match["host"], path.stat().st_mtime)
            if gone:
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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        name_os_error(exc, path)
        raise


def name_os_error(exc: BaseException, path) -> BaseException:
    """Give an OSError raised while writing ``path`` (a full disk in ``write()`` names no file)
    that file's name, so the one-line error says which file could not be written."""
    if isinstance(exc, OSError) and not exc.filename:
        exc.filename = str(path)
    return exc


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


# ---- bounded JSON reading -------------------------------------------------------------------
def json_depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion), stopping past ``limit``."""
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > limit:
            return depth
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
    return depth


def read_json(path: Path | str, what: str = "JSON file", max_bytes: int | None = None,
              max_depth: int | None = None):
    """A JSON file read whole, with every failure one BenchError naming the file: missing,
    larger than ``max_bytes`` (checked before reading), not UTF-8, not JSON, nested deeper than
    ``max_depth`` (bench.limits.MAX_JSON_BYTES and MAX_JSON_DEPTH by default)."""
    import json

    from bench.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH

    path = Path(path)
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    max_depth = MAX_JSON_DEPTH if max_depth is None else max_depth
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):    # a FIFO blocks, a device never ends
            raise _bench_error(f"cannot read {what} {path}: not a regular file (a FIFO, device or socket)")
        size = st.st_size
        if size > max_bytes:
            raise _bench_error(f"cannot read {what} {path}: {size} bytes, more than the limit of {max_bytes} (bench.limits)")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _bench_error(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise _bench_error(f"cannot read {what} {path}: is a folder, expected a file") from None
    except OSError as exc:
        raise _bench_error(f"cannot read {what} {path}: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bench_error(f"cannot read {what} {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _bench_error(f"cannot read {what} {path}: nested deeper than the limit of {max_depth} levels") from None
    except ValueError as exc:
        raise _bench_error(f"cannot read {what} {path}: not valid JSON ({exc})") from None
    if json_depth(data, max_depth) > max_depth:
        raise _bench_error(f"cannot read {what} {path}: nested deeper than the limit of {max_depth} levels")
    return data


def read_text_file(path: Path | str, limit: int, what: str) -> str:
    """The UTF-8 text (a BOM dropped) of a regular file of at most ``limit`` bytes. A FIFO, a device
    or a folder (which would block or never end), a symlink loop, a larger file or one that is not
    UTF-8 is one BenchError naming ``what`` and the path, before more than ``limit`` bytes are read."""
    from bench import BenchError

    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BenchError(f"{what} {path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        why = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or type(exc).__name__)
        raise BenchError(f"{what} {path}: {why}") from None
    if len(data) > limit:
        raise BenchError(f"{what} {path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BenchError(f"{what} {path} is not UTF-8 text") from None
