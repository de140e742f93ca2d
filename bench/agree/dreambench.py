"""DreamBench++'s release layout (github.com/yuangpeng/dreambench_plus, ``krippendorff_analysis.py``
and ``merge_data.py``), read as a :class:`bench.agree.ratings.Ratings`.

- Human ratings, raw: ``data_human_rating/raw_data/<group>/<anything>-<method>.json`` holding
  ``{"<collection id>-<prompt index>": [cp, pf]}`` (0-4); a group's files are merged per method in
  name order (a later file's key replaces an earlier one's, as ``merge_data_human_rating``'s
  dict update does). Already merged: ``data_human_rating/merged_data/<group>/<method>-cp.json`` and
  ``-pf.json`` (``{key: score}``). Raw data win where both exist. Each group is one rater.
- Judge ratings: ``data_gpt_rating/concept_preservation_<setting>/<method>.json`` and
  ``prompt_following_<setting>/<method>.json`` (``{key: score}``), or the per-item files
  (``collection_id``, ``prompt_index``, ``score``) in a ``<method>/`` folder beside them (these win
  where both exist, as in the release). Each setting is a metric of its own, pinned to its aspect.
- Other ``data_<name>_rating/<method>.json`` folders (the release's DINO, CLIP-I and CLIP-T
  scores for ``pearson.py``) are metrics too: dino and clipi rate cp, clipt pf.

Method names are normalised as the release does (lower case, spaces and hyphens to ``_``). Level
interval (the release's alpha), scale 0..4, unit the subject (the collection id). A ``null`` or
NaN score is a missing rating.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import BenchError
from bench.agree.ratings import SCORE_COLUMNS, Ratings, make_frame, normalise_method
from bench.stats.table import MAX_ABS_VALUE

ASPECTS = ("cp", "pf")
JUDGE_PREFIXES = {"concept_preservation_": "cp", "prompt_following_": "pf"}
OTHER_RATINGS = {"dino": "cp", "clipi": "cp", "clipt": "pf"}


def _visible(folder: Path):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _load(path: Path):
    """One rating file: size, nesting, UTF-8 and a FIFO checked by bench.files.read_json."""
    from bench.files import read_json

    return read_json(path, "rating file")


def _score(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchError(f"{where}: score {str(value)[:40]!r} is not a number")
    if value != value:                                  # NaN: a missing rating, as the release's is_nan
        return math.nan
    if abs(value) > MAX_ABS_VALUE:                      # infinite, or an int of 400 digits
        raise BenchError(f"{where}: score {str(value)[:20]} is not a finite number of at most {MAX_ABS_VALUE:g}")
    return float(value)


def split_key(key: str, where: str) -> tuple[str, str]:
    subject, sep, prompt = str(key).rpartition("-")
    if not sep or not subject or not prompt:
        raise BenchError(f"{where}: key {str(key)[:60]!r} is not <collection id>-<prompt index>")
    return subject, prompt


def _mapping(path: Path) -> dict:
    data = _load(path)
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected an object {{\"<collection id>-<prompt index>\": score}}")
    return data


def read_raw_group(folder: Path) -> dict[str, dict[str, list]]:
    """{method: {key: [cp, pf]}} of one group's raw files."""
    merged: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        stem = path.stem
        if "-" not in stem:
            raise BenchError(f"{path}: a raw rating file is named <anything>-<method>.json")
        method = normalise_method(stem.rsplit("-", 1)[1])
        for key, cell in _mapping(path).items():
            if not (isinstance(cell, (list, tuple)) and len(cell) == 2):
                raise BenchError(f"{path}: key {key}: rating {str(cell)[:40]!r} is not [cp, pf]")
            merged.setdefault(method, {})[key] = [_score(c, f"{path} key {key}") for c in cell]
    return merged


def read_merged_group(folder: Path) -> dict[str, dict[str, list]]:
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        method, sep, aspect = path.stem.rpartition("-")
        if not sep or aspect not in ASPECTS:
            raise BenchError(f"{path}: a merged rating file is named <method>-cp.json or <method>-pf.json")
        index = ASPECTS.index(aspect)
        for key, score in _mapping(path).items():
            cell = out.setdefault(normalise_method(method), {}).setdefault(key, [math.nan, math.nan])
            cell[index] = _score(score, f"{path} key {key}")
    return out


def human_root(path: Path) -> tuple[Path, Path]:
    """(data_human_rating folder, release root) of the release root, its data_human_rating/, or
    one of its raw_data/ and merged_data/ folders."""
    if (path / "data_human_rating").is_dir():
        return path / "data_human_rating", path
    if path.name in ("raw_data", "merged_data"):
        return path.parent, path.parent.parent
    return path, path.parent


def read_judges(root: Path) -> list[tuple]:
    rows = []
    gpt = root / "data_gpt_rating"
    if gpt.is_dir():
        for folder in _visible(gpt):
            aspect = next((a for p, a in JUDGE_PREFIXES.items() if folder.name.startswith(p)), None)
            if not folder.is_dir() or aspect is None:
                continue
            rows += _rating_folder(folder, f"gpt/{folder.name}", aspect, items=True)
    for folder in sorted(root.glob("data_*_rating")):
        name = folder.name[len("data_"):-len("_rating")]
        if folder.is_dir() and name not in ("human", "gpt"):
            rows += _rating_folder(folder, name, OTHER_RATINGS.get(name, ""), items=False)
    return rows


def _rating_folder(folder: Path, metric: str, aspect: str, items: bool) -> list[tuple]:
    """The ratings of one judge setting (or one metric folder). A method's per-item files win over
    its merged ``<method>.json``, as in the release, whose analysis rewrites the merged file from
    them (``merge_data_gpt_rating``) before reading it."""
    rows, done = [], set()
    if items:
        for sub in _visible(folder):
            files = sorted(sub.glob("*.json")) if sub.is_dir() else []
            if files:
                done.add(normalise_method(sub.name))
            for path in files:
                data = _load(path)
                if not isinstance(data, dict) or not {"collection_id", "prompt_index", "score"} <= set(data):
                    raise BenchError(f"{path}: a per-item judge file needs collection_id, prompt_index and score")
                subject, prompt = str(data["collection_id"]), str(data["prompt_index"])
                rows.append((metric, aspect, normalise_method(sub.name), subject, prompt, f"{subject}-{prompt}",
                             _score(data["score"], str(path))))
    for path in sorted(folder.glob("*.json")):
        method = normalise_method(path.stem)
        if method in done:
            continue
        for key, score in _mapping(path).items():
            subject, prompt = split_key(key, str(path))
            rows.append((metric, aspect, method, subject, prompt, f"{subject}-{prompt}",
                         _score(score, f"{path} key {key}")))
    return rows


def read_dreambench_plus(path: Path) -> Ratings:
    import pandas as pd

    human, root = human_root(path)
    raw, merged = human / "raw_data", human / "merged_data"
    base = raw if raw.is_dir() and any(raw.glob("*/*.json")) else merged
    if path.name in ("raw_data", "merged_data"):
        base = path                                   # the folder given, not its sibling
    if not base.is_dir():
        raise BenchError(f"{human}: no raw_data/ or merged_data/ folder of human ratings")
    reader = read_raw_group if base.name == "raw_data" else read_merged_group
    rows = []
    for group in _visible(base):
        if not group.is_dir():
            continue
        for method, cells in reader(group).items():
            for key, cell in cells.items():
                subject, prompt = split_key(key, f"{group} ({method})")
                for aspect, value in zip(ASPECTS, cell):
                    rows.append((group.name, method, subject, prompt, f"{subject}-{prompt}", aspect, value))
    if not rows:
        raise BenchError(f"{base}: no rating files (<group>/*.json)")
    judges = pd.DataFrame(read_judges(root), columns=list(SCORE_COLUMNS))
    judges["value"] = judges["value"].astype(float)
    return Ratings(make_frame(rows), str(path), "dreambench-plus", "interval", (0.0, 4.0), ASPECTS,
                   judges=judges if len(judges) else None)
