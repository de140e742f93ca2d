"""Long-format score tables: reading and checking one (`bench stats TABLE`), and turning the
harness's scores.parquet rows into one.

A score table has one row per (run, subject, prompt, seed, image, metric) and the columns

    run, subject, prompt, seed, image, metric, value

The first six are identifiers (read as text: ``7`` and ``07`` are different prompts); ``value``
is a finite number. Extra columns are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench import BenchError

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMNS = ("run", "subject", "prompt", "seed", "image", "metric")
COLUMNS = ID_COLUMNS + ("value",)
KEY_COLUMNS = ("subject", "prompt", "seed", "image")
#: Largest |score| accepted: far above any metric's scale, far enough below the float maximum
#: (1.8e308) that sums over millions of scores and bootstrap weights cannot overflow to inf.
MAX_ABS_VALUE = 1e100


def read_table(path: Path | str) -> "pd.DataFrame":
    """Read a CSV or parquet score table and check it (:func:`check_table`); one-line errors."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"score table {path} does not exist (give a CSV or parquet file with the columns "
                         f"{', '.join(COLUMNS)})")
    with open(path, "rb") as handle:
        parquet = handle.read(4) == b"PAR1"
    try:
        if parquet:
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                             sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        kind = "parquet" if parquet else "CSV"
        raise BenchError(f"score table {path}: cannot read it as {kind}: {' '.join(str(exc).split())[:200]}") from None
    return check_table(df, str(path), first_line=2 if not parquet else 0)


def check_table(df: "pd.DataFrame", source: str = "score table", first_line: int = 0) -> "pd.DataFrame":
    """The table with text identifiers and float values, or a BenchError naming the first
    problem: no rows, a missing column, an empty identifier, a value that is not a finite number,
    a key given twice. ``first_line`` maps row positions to file lines (2 for a CSV's first row)."""
    import numpy as np
    import pandas as pd

    where = (lambda i: f"line {i + first_line}") if first_line else (lambda i: f"row {i}")
    names = [c.strip().lower() if isinstance(c, str) else c for c in df.columns]
    repeated = sorted({n for n in names if n in COLUMNS and names.count(n) > 1})
    if repeated:
        given = [str(c) for c in df.columns if isinstance(c, str) and c.strip().lower() == repeated[0]]
        raise BenchError(f"{source}: the column {repeated[0]} is given {len(given)} times "
                         f"({', '.join(map(repr, given))}; names are read without case and surrounding spaces): keep one")
    df = df.rename(columns={c: c.strip().lower() for c in df.columns if isinstance(c, str)})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"{source}: missing column(s) {', '.join(missing)}; a score table needs the columns "
                         f"{', '.join(COLUMNS)}")
    if len(df) == 0:
        raise BenchError(f"{source}: the table has no rows")
    df = df[list(COLUMNS)].reset_index(drop=True)
    for column in ID_COLUMNS:
        text = df[column].astype(str).str.strip()
        empty = df[column].isna().to_numpy() | (text == "").to_numpy()     # a subject named None or nan is a name
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise BenchError(f"{source}: column {column} is empty in {int(empty.sum())} row(s), first at {where(i)}")
        df[column] = text
    raw = df["value"]
    if raw.dtype == bool or str(raw.dtype) == "boolean":
        raise BenchError(f"{source}: column value holds true/false, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        numbers, blank = raw, raw.isna().to_numpy()
    else:
        text = raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        blank = text.str.lower().isin(["", "nan", "-nan", "na", "n/a", "null", "none"]).to_numpy()
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BenchError(f"{source}: column value is not a number in {int(bad.sum())} row(s), first at {where(i)}: "
                         f"{str(raw.iloc[i])[:40]!r}")
    overflow = np.isinf(values) & ~blank
    if not pd.api.types.is_numeric_dtype(raw):      # a 400-digit number parses to inf: name it as too large
        overflow &= ~text.str.lower().str.lstrip("+-").isin(["inf", "infinity"]).to_numpy()
    else:
        overflow[:] = False
    if overflow.any():
        i = int(np.flatnonzero(overflow)[0])
        raise BenchError(f"{source}: column value is too large (|value| > {MAX_ABS_VALUE:g}) in {int(overflow.sum())} "
                         f"row(s), first at {where(i)}: {str(raw.iloc[i])[:20]}...; rescale the scores")
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        i = int(np.flatnonzero(nonfinite)[0])
        raise BenchError(f"{source}: column value is NaN, empty or infinite in {int(nonfinite.sum())} row(s), first at "
                         f"{where(i)}: drop the rows whose score could not be computed")
    huge = np.abs(values) > MAX_ABS_VALUE
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise BenchError(f"{source}: column value is too large (|value| > {MAX_ABS_VALUE:g}) in {int(huge.sum())} "
                         f"row(s), first at {where(i)}: {values[i]:g}; rescale the scores")
    df["value"] = values
    dup = df.duplicated(list(ID_COLUMNS), keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise BenchError(f"{source}: {int(dup.sum())} row(s) repeat a (run, subject, prompt, seed, image, metric) key, "
                         f"first at {where(i)}: each key needs one value")
    return df


def from_scores(scores: "pd.DataFrame") -> "pd.DataFrame":
    """The score table of the harness's scores (load_scores' frame: key, seed, subject,
    prompt_index, metric, value, run): NaN scores (could not be computed) are left out, as the
    protocol's means leave them out."""
    import pandas as pd

    df = scores[scores["value"].notna()].reset_index(drop=True)
    return pd.DataFrame({
        "run": df["run"].astype(str), "subject": df["subject"].astype(str),
        "prompt": df["prompt_index"].astype(str), "seed": df["seed"].astype(str),
        "image": df["key"].astype(str).str.replace(r"^.*/i", "", regex=True),     # key .../i<k>
        "metric": df["metric"].astype(str), "value": df["value"].astype(float),
    })
