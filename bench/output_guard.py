"""What a command may write over, checked in one line before anything is written.

Every command that writes a file or a folder calls :func:`guard_file` or :func:`guard_folder` on
each target it was given, with the paths it reads. A target is refused (BenchError naming the
option and the path, exit 2) when writing it could destroy something the command does not own:

- an existing path of another kind: a folder, FIFO, device or socket where a file is written, a
  file where a folder is written (a rename over /dev/null replaces the device; a FIFO blocks);
- one of the command's own inputs, under any spelling, symlink or hard link (``bench stats
  T.csv --json T.csv``);
- a run directory's own files (run.json, scores.parquet, .run.lock, anything under generations/
  and images/) of a run the command is not writing (``bench check RUN --baseline RUN/run.json
  --update``), or a folder that is a run directory or lies inside one of those entries;
- an existing file whose first bytes are not what the command writes (``kind``): a baseline
  replaces only a baseline, a JSON list only a JSON list.

:func:`require_regular` is the reading side: a FIFO or device named where a file is read would
block or never end, so it is refused before the file is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterable

from bench import BenchError

#: A run directory's own entries (bench/store.py): never written by another command.
RUN_ENTRIES = ("run.json", ".run.lock", "scores.parquet", "generations", "images")
#: How much of an existing file is read to tell what it is.
SNIFF_BYTES = 64 * 1024


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat(path: Path, option: str):
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:          # a symlink loop, a name too long, a permission
        raise BenchError(f"{option} {path}: {exc.strerror or exc}") from None
    except ValueError:              # a NUL byte in the name
        raise BenchError(f"{option} {path!r}: not a valid file name") from None


def require_regular(path: Path | str, what: str) -> Path:
    """Refuse, before opening it, a path to read that exists but is not a regular file (a FIFO
    would block the read forever, a device never ends). A missing path passes (the caller says
    what is missing)."""
    path = Path(path)
    st = _stat(path, what)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BenchError(f"{what} {path}: is {_kind_of(st.st_mode)}, expected a regular file")
    return path


def run_dir_holding(path: Path) -> tuple[Path, str] | None:
    """The run directory whose own entry ``path`` is (or lies under), with that entry's name;
    None when it is no run's file. ``path`` is resolved first (symlinks, '..')."""
    real = Path(os.path.realpath(path))
    parts = real.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in RUN_ENTRIES and os.path.isfile(os.path.join(*parts[:i], "run.json")):
            return Path(*parts[:i]), parts[i]
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)       # any spelling, symlink or hard link
    except OSError:                         # one of them does not exist: nothing to destroy
        return False


def _check_inputs(path: Path, option: str, inputs: Iterable) -> None:
    for given in inputs:
        if given is None or str(given) in ("", "-"):
            continue
        if _same(path, Path(given)):
            raise BenchError(f"{option} {path}: is an input of this command ({given}); writing it would destroy "
                             "that input: name another file")


def guard_file(path: Path | str, option: str, inputs: Iterable = (), kind: Callable[[bytes], bool] | None = None,
               what: str = "", own_run: Path | str | None = None) -> Path:
    """Check a file target before any work (see the module). ``kind`` tells from an existing
    file's first bytes whether it is what this command writes (``what`` names it in the error);
    ``own_run`` is the run directory this command writes into (its entries are allowed)."""
    path = Path(path).expanduser()
    st = _stat(path, option)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BenchError(f"{option} {path}: is {_kind_of(st.st_mode)}; name a regular file to write")
    _check_inputs(path, option, inputs)
    held = run_dir_holding(path)
    if held is not None and not (own_run is not None and _same(held[0], Path(own_run))):
        raise BenchError(f"{option} {path}: is {held[1]} of the run directory {held[0]}, which this command did not "
                         "create; name a file outside the run's own files")
    if st is not None and kind is not None and st.st_size > 0:
        try:
            with open(path, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError as exc:
            raise BenchError(f"{option} {path}: cannot read the existing file ({exc.strerror or exc})") from None
        if not kind(head):
            raise BenchError(f"{option} {path}: the existing file is not {what or 'what this command writes'}; "
                             "it is left alone: name a new file, or remove it first")
    from bench.options import check_output_dir

    check_output_dir(path.parent, option)
    return path


def guard_folder(path: Path | str, option: str, inputs: Iterable = (), run_ok: bool = False) -> Path:
    """Check a folder target before any work: not an existing file, FIFO or device; not one of the
    command's input folders or files; not a run directory (unless ``run_ok``: the command writes
    runs) and not inside a run's own entries (generations/, images/)."""
    path = Path(path).expanduser()
    st = _stat(path, option)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise BenchError(f"{option} {path}: is {'a file' if stat.S_ISREG(st.st_mode) else _kind_of(st.st_mode)}, "
                         "expected a folder")
    _check_inputs(path, option, inputs)
    held = run_dir_holding(path)
    if held is not None:
        raise BenchError(f"{option} {path}: lies inside {held[1]}/ of the run directory {held[0]}; name a folder "
                         "outside the run's own files")
    if run_ok:
        check_library_path(path, option)
    elif (path / "run.json").is_file():
        raise BenchError(f"{option} {path}: is a run directory; name another folder for this output")
    from bench.options import check_output_dir

    return check_output_dir(path, option)


def check_library_path(path: Path | str, option: str) -> Path:
    """Refuse a path that pyarrow cannot open: under an ASCII locale without UTF-8 mode
    (LC_ALL=C PYTHONUTF8=0) a non-ASCII name reaches Python as undecodable bytes, which Python's
    own files handle but a run's scores.parquet (written by pyarrow) does not. Checked before any
    work, instead of failing after generating."""
    import sys

    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise BenchError(f"{option} {path}: the name is not valid text under this locale (file names decoded as "
                         f"{sys.getfilesystemencoding()}), and pyarrow cannot open it; run under a UTF-8 locale "
                         "(LC_ALL=C.UTF-8 or PYTHONUTF8=1) or choose an ASCII name") from None
    return Path(path)


# ---- what an existing file must look like to be replaced ----------------------------------
def _strip(head: bytes) -> bytes:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")


def json_list(head: bytes) -> bool:
    """A JSON list of result rows (``bench stats --json``), or an empty list."""
    head = _strip(head)
    return head.startswith(b"[") and (b'"metric"' in head or head.rstrip() in (b"[]", b"[ ]"))


def baseline(head: bytes) -> bool:
    """A baseline written by ``bench check --update`` (a JSON object with its format field)."""
    head = _strip(head)
    return head.startswith(b"{") and (b'"format"' in head or b'"created_at"' in head)


def arena_result(head: bytes) -> bool:
    """A result written by ``bench arena --json`` (a JSON object holding its judge_version)."""
    head = _strip(head)
    return head.startswith(b"{") and b'"judge_version"' in head and b'"position_bias' in head
