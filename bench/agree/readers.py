"""Reading human ratings: the format chosen by content (or ``--format``), ImagenHub's rater TSVs
and the long table here, DreamBench++'s release layout in :mod:`bench.agree.dreambench`.

- ImagenHub (``eval/human_ratings/<task>/``): one TSV per rater, ``<task>_rater<k>.tsv``; the first
  column names the image (``uid``), every other column is a model and each cell ``[SC, PQ]`` with
  values 0, 0.5, 1. A third aspect ``O`` is ImagenHub's overall score, sqrt(SC * PQ) per rating.
  Level ordinal (its ``humaneval.py`` computes ordinal alpha), scale 0..1, unit the item.
- Long table (CSV, TSV or parquet): columns ``rater, method, subject, prompt, item, aspect, value``;
  ``item`` may be blank (then ``<subject>-<prompt>``), ``value`` blank where a rating is missing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from bench import BenchError
from bench.agree.ratings import COLUMNS, Ratings, check, make_frame
from bench.stats.table import MAX_ABS_VALUE

FORMATS = ("imagenhub", "dreambench-plus", "long")
IMAGENHUB_ASPECTS = ("SC", "PQ", "O")
IMAGENHUB_VALUES = (0.0, 0.5, 1.0, 2.0)     # the keys of humaneval.py's value mapping
_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_CELL = re.compile(rf"^\[{_NUMBER},{_NUMBER}\]$")
_MISSING = {"", "nan", "none", "null", "na", "n/a"}


def read_ratings(path, fmt: str | None = None, level: str | None = None,
                 scale: tuple[float, float] | None = None) -> Ratings:
    """The ratings at ``path`` (a folder or a table), checked (:func:`bench.agree.ratings.check`);
    ``level`` and ``scale`` override what the format implies."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"ratings {path} do not exist (give an ImagenHub task folder, a DreamBench++ release "
                         f"folder or a long table; docs/agreement.md)")
    if not path.is_dir():
        from bench.output_guard import require_regular
        require_regular(path, "ratings")                # a FIFO would block the read
    fmt = fmt or detect(path)
    if fmt == "imagenhub":
        ratings = read_imagenhub(path)
    elif fmt == "dreambench-plus":
        from bench.agree.dreambench import read_dreambench_plus
        ratings = read_dreambench_plus(path)
    elif fmt == "long":
        ratings = read_long(path)
    else:
        raise BenchError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    if level:
        ratings.level = level
    if scale:
        ratings.scale = (float(scale[0]), float(scale[1]))
    return check(ratings)


def detect(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".tsv" and _first_line(path).split("\t")[0].strip().lower() == "uid":
            raise BenchError(f"{path}: one ImagenHub rater file; give the folder that holds every rater's file")
        return "long"
    if ((path / "data_human_rating").is_dir() or (path / "raw_data").is_dir() or (path / "merged_data").is_dir()
            or path.name in ("raw_data", "merged_data")):
        return "dreambench-plus"
    if any(path.glob("*.tsv")):
        return "imagenhub"
    tasks = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
    if tasks:
        raise BenchError(f"{path}: holds {len(tasks)} ImagenHub task folders ({', '.join(tasks[:4])}"
                         f"{', ...' if len(tasks) > 4 else ''}); give one task folder")
    raise BenchError(f"{path}: no ratings recognised (ImagenHub *.tsv files, a DreamBench++ data_human_rating/ "
                     f"folder, or a long table); see docs/agreement.md or give --format")


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline()


def _read_tsv(path: Path):
    import pandas as pd

    from bench.output_guard import require_regular

    require_regular(path, "rater file")                 # a FIFO named *.tsv would block the read
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BenchError(f"{path}: cannot read it as a TSV: {' '.join(str(exc).split())[:160]}") from None


def rater_name(path: Path) -> str:
    match = re.search(r"rater[_-]?(\d+)$", path.stem, flags=re.I)
    return f"rater{match.group(1)}" if match else path.stem


def parse_cell(text: str, where: str) -> tuple[float, float]:
    """``[a, b]`` as two floats; a blank cell is two missing ratings."""
    text = str(text).strip()
    if text.lower() in _MISSING:
        return math.nan, math.nan
    match = _CELL.match(text)
    if not match:
        raise BenchError(f"{where}: cell {text[:40]!r} is not [a, b] (two numbers, e.g. [1, 0.5])")
    a, b = float(match.group(1)), float(match.group(2))
    if a not in IMAGENHUB_VALUES or b not in IMAGENHUB_VALUES:
        raise BenchError(f"{where}: cell {text[:40]!r} holds a value other than 0, 0.5 or 1 (or 2), the values "
                         f"ImagenHub's analysis maps")
    return a, b


def read_imagenhub(folder: Path) -> Ratings:
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise BenchError(f"{folder}: no ImagenHub rater files (*.tsv)")
    rows, models, names = [], None, {}
    for path in files:
        df = _read_tsv(path)
        if df.shape[1] < 2 or df.empty:
            raise BenchError(f"{path}: needs a uid column, at least one model column and one row")
        these = [str(c).strip() for c in df.columns[1:]]
        if len(set(these)) != len(these):
            raise BenchError(f"{path}: a model column appears twice")
        if models is None:
            models, first = these, path
        elif set(these) != set(models):
            extra, lacking = sorted(set(these) - set(models)), sorted(set(models) - set(these))
            raise BenchError(f"{path}: rates another set of models than {first.name} (extra: "
                             f"{', '.join(extra) or 'none'}; missing: {', '.join(lacking) or 'none'})")
        rater = rater_name(path)
        if rater in names:
            raise BenchError(f"{path}: rater name {rater} also given by {names[rater].name}")
        names[rater] = path
        uids = df.iloc[:, 0].astype(str).str.strip()
        if uids.duplicated().any():
            raise BenchError(f"{path}: uid {uids[uids.duplicated()].iloc[0]} appears twice")
        for j, model in enumerate(these, start=1):
            for i, (uid, cell) in enumerate(zip(uids, df.iloc[:, j])):
                sc, pq = parse_cell(cell, f"{path} line {i + 2} column {model}")
                overall = math.sqrt(sc * pq) if sc * pq >= 0 else math.nan
                for aspect, value in zip(IMAGENHUB_ASPECTS, (sc, pq, overall)):
                    rows.append((rater, model, "", "", uid, aspect, value))
    frame = make_frame(rows)
    top = max(1.0, float(frame["value"].max()))
    return Ratings(frame, str(folder), "imagenhub", "ordinal", (0.0, top), IMAGENHUB_ASPECTS)


def read_table_file(path: Path, columns, what: str):
    """A CSV, TSV or parquet file as a frame of text columns (lower-cased names)."""
    import pandas as pd

    from bench.output_guard import require_regular

    require_regular(path, what)                         # a FIFO would block the read
    with open(path, "rb") as handle:
        parquet = handle.read(4) == b"PAR1"
    try:
        if parquet:
            df = pd.read_parquet(path)
            df = df.astype({c: str for c in df.columns if c != "value"})
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                             sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BenchError(f"{what} {path}: cannot read it: {' '.join(str(exc).split())[:160]}") from None
    df = df.rename(columns={c: str(c).strip().lower() for c in df.columns})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BenchError(f"{what} {path}: missing column(s) {', '.join(missing)}; it needs {', '.join(columns)}")
    return df, (0 if parquet else 2)


def to_numbers(raw, where) -> "list[float]":
    """Values as floats (blank: NaN); a BenchError naming the first entry that is not a number."""
    import numpy as np
    import pandas as pd

    text = raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = (np.isnan(values) & ~text.str.lower().isin(_MISSING).to_numpy()) | np.isinf(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BenchError(f"{where(i)}: value {text.iloc[i][:40]!r} is not a number")
    huge = np.abs(np.nan_to_num(values)) > MAX_ABS_VALUE
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise BenchError(f"{where(i)}: value {text.iloc[i][:40]!r} is too large (|value| > {MAX_ABS_VALUE:g}; "
                         f"its squared differences would overflow)")
    return values


def read_long(path: Path) -> Ratings:
    df, first = read_table_file(path, COLUMNS, "ratings")
    where = (lambda i: f"{path} line {i + first}") if first else (lambda i: f"{path} row {i}")
    values = to_numbers(df["value"], where)
    for column in ("rater", "method", "aspect"):
        text = df[column].astype(str).str.strip()
        if (text == "").any():
            raise BenchError(f"{where(int((text == '').to_numpy().argmax()))}: column {column} is empty")
    subject, prompt = df["subject"].astype(str).str.strip(), df["prompt"].astype(str).str.strip()
    item = df["item"].astype(str).str.strip()
    blank = item == ""
    item = item.where(~blank, subject + "-" + prompt)
    if (blank & ((subject == "") | (prompt == ""))).any():
        i = int((blank & ((subject == "") | (prompt == ""))).to_numpy().argmax())
        raise BenchError(f"{where(i)}: no item: give the item column, or subject and prompt")
    rows = list(zip(df["rater"].str.strip(), df["method"].str.strip(), subject, prompt, item,
                    df["aspect"].str.strip(), values))
    frame = make_frame(rows)
    aspects = tuple(dict.fromkeys(frame["aspect"]))
    present = frame["value"].dropna()
    scale = (float(present.min()), float(present.max())) if len(present) else (0.0, 1.0)
    return Ratings(frame, str(path), "long", "interval", scale, aspects)
