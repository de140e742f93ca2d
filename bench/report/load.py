"""Reading: run directories and their score tables into tidy pandas frames.

``load_runs`` gives one row per run (its label, suite, method with its protocol marks, base
model, weights, planned and recorded images); ``load_scores`` the long-format scores of several
runs (key, seed, metric, value, ...) with run, suite and method columns added. ``run_cells``
reads back the suite's samples (prompts, reference images) a report shows beside the images;
``read_paper_rows`` the published numbers in ``reports/paper/<suite>.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import BenchError
from bench.store import RunStore, weights_status
from bench.suites import REPO_ROOT

if TYPE_CHECKING:                      # pandas is imported inside the functions (fast --help)
    import pandas as pd

PAPER_DIR = REPO_ROOT / "reports" / "paper"
DASH = "–"


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names for runs: the folder name, with parents added where names clash."""
    depth = 1
    while True:
        labels = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth > 8:
            return labels
        depth += 1


# Short names of the base models the harness knows; other ids are shown as they are.
MODEL_NAMES = {
    "stabilityai/stable-diffusion-2-1-base": "SD 2.1-base",
    "stabilityai/stable-diffusion-2-1": "SD 2.1",
    "runwayml/stable-diffusion-v1-5": "SD 1.5",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD 1.5",
    "Salesforce/blipdiffusion": "BLIP-Diffusion (SD 1.5)",
}


def _method_info(run: dict) -> dict:
    return run.get("method") if isinstance(run.get("method"), dict) else {}


def base_model(run: dict) -> str:
    """The base model as the method describes it (``describe()["model"]``), else the run's
    identity (``--weights`` or the preset). Known Hugging Face ids get their short name."""
    model = _method_info(run).get("model")
    model = model if isinstance(model, dict) else {}
    name = model.get("base_model") or model.get("model_id") or run.get("identity", {}).get("model") \
        or run.get("base_model")
    if not name:
        return DASH
    name = str(name)
    return MODEL_NAMES.get(name, name)


def method_name(run: dict) -> str:
    identity = run.get("identity", {})
    return str(identity.get("method") or _method_info(run).get("name") or DASH)


def method_params(run: dict) -> dict:
    """The method's effective parameters: what it described, over the run's --param overrides."""
    params = dict(run.get("identity", {}).get("method_params") or {})
    described = _method_info(run).get("params")
    if isinstance(described, dict):
        params.update(described)
    return params


BACKGROUND_MARK = "background removed, unlike the release"


def method_label(run: dict) -> str:
    """The method name, with the parameters a reader must see to compare it with a paper row:
    ``protocol`` (release or paper, docs/protocols.md section 1b) and the all-step schedule
    (how the paper's Tab. 7 variants were measured)."""
    params = method_params(run)
    marks = []
    if params.get("protocol"):
        marks.append(f"protocol={params['protocol']}")
    if params.get("schedule") == "allstep":
        marks.append("all-step")
    if params.get("protocol") == "release" and params.get("subject_background") == "remove":
        marks.append(BACKGROUND_MARK)       # the release removes none (docs/protocols.md section 1b)
    return method_name(run) + (f" [{', '.join(marks)}]" if marks else "")


def expected_per_seed(run: dict, run_dir: Path) -> int | None:
    """How many images one seed of the run's plan holds (None when it cannot be told).

    From ``plan.images_per_seed`` when the runner wrote it; else from the suite's cells
    (the plan's subjects and --limit, less the edit samples skipped for lack of a mask) times
    ``plan.images_per_prompt``; else ``plan.total`` over the number of seeds."""
    plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
    if plan.get("images_per_seed"):
        return int(plan["images_per_seed"])
    per_prompt = plan.get("images_per_prompt")
    cells = run_cells(run, run_dir)
    if cells and per_prompt and plan.get("subjects"):
        subjects = set(plan["subjects"])
        chosen = [c for c, s in cells.items() if s.subject in subjects]
        if plan.get("limit"):
            chosen = chosen[:int(plan["limit"])]
        chosen = [c for c in chosen if c not in set(plan.get("skipped_without_mask") or [])]
        return len(chosen) * int(per_prompt)
    seeds = plan.get("seeds") or []
    if plan.get("total") and seeds and not run.get("resumed_at"):
        return int(plan["total"]) // len(seeds)
    return None


_CELLS: dict[str, dict] = {}


def run_cells(run: dict, run_dir: Path) -> dict:
    """The run's suite cells ({cell: Sample}, in suite order), or {} when the suite's data
    cannot be loaded here (a run made on another machine): reports then show less, not fail."""
    import inspect

    from bench.registry import SUITES
    from bench.suites import load_suite

    cache_key = str(Path(run_dir).resolve())
    if cache_key not in _CELLS:
        try:
            info = run.get("suite") if isinstance(run.get("suite"), dict) else {}
            options = dict(info.get("options") or {})
            if "annotate" in inspect.signature(SUITES.get(info.get("name", "")).load().__init__).parameters:
                options["annotate"] = False        # a report needs prompts and images, not edit masks
            suite = load_suite(info["name"], info.get("root"), **options)
            cells = {s.cell: s for s in suite.samples()}
        except Exception as exc:          # noqa: BLE001 (any failure of a suite loader: report without it)
            print(f"warning: {run_dir}: the suite's samples cannot be loaded here ({exc}); "
                  "the report shows no prompts or reference images for it", file=sys.stderr)
            cells = {}
        _CELLS[cache_key] = cells
    return _CELLS[cache_key]


def load_runs(run_dirs) -> "pd.DataFrame":
    """One row per run: run (label), run_dir, suite, method, label (method with its protocol and
    schedule marks), base_model, weights, random_weights, seeds (planned), recorded (images
    with a record), expected (the plan's images, or None)."""
    import pandas as pd

    paths = [Path(p) for p in run_dirs]
    rows = []
    for label, path in zip(_labels(paths), paths):
        store = RunStore.open_existing(path)
        run = store.read_run()
        plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
        records = store.records()
        per_seed = expected_per_seed(run, path)
        seeds = [int(s) for s in plan.get("seeds") or []]
        rows.append({"run": label, "run_dir": str(path), "suite": (run.get("suite") or {}).get("name", DASH),
                     "method": method_name(run), "label": method_label(run), "base_model": base_model(run),
                     "weights": weights_status(run), "random_weights": bool(run.get("random_weights"))
                     or "random weights" in weights_status(run),
                     "seeds": seeds, "recorded": len(records),
                     "expected": per_seed * len(seeds) if per_seed is not None and seeds else None,
                     "expected_per_seed": per_seed})
    return pd.DataFrame(rows)


def load_scores(run_dirs) -> "pd.DataFrame":
    """The long-format scores of several runs, with run, suite and method columns added."""
    import pandas as pd

    runs = load_runs(run_dirs)
    frames = []
    for info in runs.itertuples(index=False):
        store = RunStore(info.run_dir)
        df = store.read_scores()         # one line for a missing, foreign or torn file
        frames.append(df.assign(run=info.run, suite=info.suite, method=info.method))
    if not frames:
        raise BenchError("no run directories given")
    return pd.concat(frames, ignore_index=True)


def read_paper_rows(suite: str, paper_dir: Path = PAPER_DIR) -> "pd.DataFrame":
    import pandas as pd

    path = Path(paper_dir) / f"{suite}.csv"
    if not path.exists():
        return pd.DataFrame(columns=["method", "source"])
    from bench.output_guard import require_regular

    require_regular(path, "paper table")          # a FIFO would block the read
    # names are text whatever they spell ("None", "NA" and "nan" are method names there); numbers
    # may be left empty or written as a missing value
    columns = pd.read_csv(path, nrows=0).columns
    missing = ["", "nan", "NaN", "NA", "N/A", "n/a", "null", "NULL", "None", "-", "–"]
    return pd.read_csv(path, dtype={"method": str, "source": str}, keep_default_na=False,
                       na_values={c: missing for c in columns if c not in ("method", "source", "base_model")})
