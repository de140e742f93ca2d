"""The in-memory form of a human-rating study and the checks every reader's output passes.

A :class:`Ratings` holds one row per (rater, method, item, aspect) rating in ``frame``, with the
columns ``rater, method, subject, prompt, item, aspect, value`` (``value`` NaN where a rating is
missing: missing ratings stay missing, they are never filled in), plus what the format says about
its scale: the level of measurement its own analysis uses, the scale's range, and the resampling
unit (the subject where the format names one, else the item). Judge ratings shipped with a
release (DreamBench++'s GPT ratings) travel in ``judges`` as metric scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import BenchError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("rater", "method", "subject", "prompt", "item", "aspect", "value")
LEVELS = ("nominal", "ordinal", "interval", "ratio")
#: columns of a metric-score frame after reading and joining (bench.agree.scores)
SCORE_COLUMNS = ("metric", "aspect", "method", "subject", "prompt", "item", "value")


def normalise_method(name: str) -> str:
    """A method name as DreamBench++'s release writes it: lower case, spaces and hyphens to ``_``."""
    return re.sub(r"[ \-]", "_", str(name).strip()).lower()


@dataclass
class Ratings:
    frame: "pd.DataFrame"
    source: str
    format: str
    level: str
    scale: tuple[float, float]
    aspects: tuple[str, ...]
    judges: "pd.DataFrame | None" = None
    notes: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        """The resampling unit: ``subject`` where every rating names one, else ``item``."""
        return "subject" if (self.frame["subject"] != "").all() else "item"

    @property
    def raters(self) -> list[str]:
        import pandas as pd

        return [str(r) for r in pd.unique(self.frame["rater"])]

    @property
    def methods(self) -> list[str]:
        import pandas as pd

        return [str(m) for m in pd.unique(self.frame["method"])]

    def unit_of(self, frame: "pd.DataFrame") -> "pd.Series":
        """The resampling unit of each row of a frame holding subject and item columns."""
        return frame["subject"] if self.unit == "subject" else frame["item"]


def make_frame(rows: list[tuple]) -> "pd.DataFrame":
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in COLUMNS[:-1]:
        df[column] = df[column].astype(str)
    df["value"] = df["value"].astype(float)
    return df


def check(ratings: Ratings) -> Ratings:
    """One-line errors for a study no agreement can be computed on: no ratings, a single rater,
    an aspect whose ratings all hold one value, a level that is not Krippendorff's."""
    import numpy as np

    df = ratings.frame
    where = ratings.source
    if ratings.level not in LEVELS:
        raise BenchError(f"{where}: level of measurement {ratings.level!r} is not one of {', '.join(LEVELS)}")
    present = df[df["value"].notna()]
    if present.empty:
        raise BenchError(f"{where}: no ratings found")
    if present["rater"].nunique() < 2:
        raise BenchError(f"{where}: only one rater ({present['rater'].iloc[0]}); inter-rater agreement and "
                         f"agreement with each rater group need at least two")
    for aspect in ratings.aspects:
        values = present.loc[present["aspect"] == aspect, "value"].to_numpy()
        if len(values) == 0:
            raise BenchError(f"{where}: aspect {aspect} holds no ratings")
        if np.unique(values).size < 2:
            raise BenchError(f"{where}: aspect {aspect} has no variance (every rating is {values[0]:g}); no "
                             f"agreement statistic is defined on it")
    dup = df.duplicated(["rater", "method", "item", "aspect"])
    if dup.any():
        row = df[dup].iloc[0]
        raise BenchError(f"{where}: rater {row['rater']} rates item {row['item']} of {row['method']} twice "
                         f"(aspect {row['aspect']})")
    return ratings
