"""The console tables (markdown) and the JSON file of `bench agree`; bench.report.humans reuses the
tables for the report's section."""

from __future__ import annotations

import json
import math
from pathlib import Path

DASH = "–"
NO_CI = "no interval"


def num(x, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def cell(row: dict, key: str, digits: int = 3, signed: bool = False) -> str:
    """``value [low, high]``; ``value [no interval]`` where the data are too few (the reason is
    in the notes)."""
    value = row.get(key)
    if value is None:
        return DASH
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if low is None or high is None:
        return f"{num(value, digits, signed)} [{NO_CI}]"
    return f"{num(value, digits, signed)} [{num(low, digits, signed)}, {num(high, digits, signed)}]"


def human_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    aspects = result["ratings"]["aspects"]
    header = ["Method"] + [f"{a} {what}" for a in aspects for what in ("mean", "α")]
    by = {(r["method"], r["aspect"]): r for r in result["humans"]}
    rows = []
    for method in result["ratings"]["methods"]:
        line = [method]
        for aspect in aspects:
            r = by.get((method, aspect), {})
            line += [cell(r, "mean"), cell(r, "alpha")]
        rows.append(line)
    return header, rows


def metric_rows(result: dict, method: str | None = "all") -> tuple[list[str], list[list[str]]]:
    header = ["Metric", "Aspect"] + (["Method"] if method is None else []) + [
        "Spearman ρ", "Pearson r", "Kendall τb", "α vs raters", "n"]
    rows = []
    for r in result["metrics"]:
        if (method is not None and r["method"] != method) or (method is None and r["method"] == "all"):
            continue
        rows.append([r["metric"], r["aspect"]] + ([r["method"]] if method is None else []) + [
            cell(r, "spearman"), cell(r, "pearson"), cell(r, "kendall"), cell(r, "alpha"), str(r["n_items"])])
    return header, rows


def system_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Metric", "Aspect", "Methods", "Kendall τ of method means", "Top (metric)", "Top (humans)",
              "P(same top)"]
    rows = [[r["metric"], r["aspect"], str(r["methods"]), cell(r, "kendall"), r["top_metric"], r["top_human"],
             num(r.get("p_same_top"), 2)] for r in result["system"]]
    return header, rows


def comparison_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Aspect", "A − B", "Δ Spearman ρ", "Δ Pearson r", "n"]
    rows = [[r["aspect"], f"{r['metric_a']} − {r['metric_b']}", cell(r, "spearman_diff", signed=True),
             cell(r, "pearson_diff", signed=True), str(r["n_items"])] for r in result["comparisons"]]
    return header, rows


def notes(result: dict) -> list[str]:
    seen = list(result.get("notes", []))
    for part in ("humans", "metrics", "system", "comparisons"):
        for r in result[part]:
            for key, value in r.items():
                if key.endswith("note") and value:
                    seen.append(value)
    return list(dict.fromkeys(seen))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


def sections(result: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, explanation, header, rows) of every table that has rows."""
    r = result["ratings"]
    s = result["settings"]
    ci = (f"intervals: {int(round(100 * (1 - s['alpha'])))}% {s['interval']} ({r['unit']}, {s['resamples']} "
          f"resamples, seed {s['seed']})")
    out = [("Human ratings", f"{len(r['raters'])} raters, {r['items']} items, {r['missing']} missing ratings; mean: "
            f"raters averaged per item, then over items; α: Krippendorff's alpha between raters, {r['level']}; "
            + ci, *human_rows(result))]
    if result["metrics"]:
        out.append(("Metric–human agreement (items of all methods)", "correlations with the raters' mean per item; "
                    "α: Krippendorff's alpha (interval) of the metric against each rater, averaged over raters; "
                    + ci, *metric_rows(result)))
        out.append(("Metric–human agreement per method", "as above, on each method's items", *metric_rows(result, None)))
    if result["system"]:
        out.append(("System level", "do the metric's method means rank the methods as the human means do; "
                    "P(same top): share of resamples in which the metric's best method is the humans' best",
                    *system_rows(result)))
    if result["comparisons"]:
        out.append(("Which metric agrees better", "paired bootstrap of the difference in correlation with the human "
                    "mean, on the items both metrics score (an interval that excludes 0: a real difference)",
                    *comparison_rows(result)))
    return [t for t in out if t[3]]


def console(result: dict) -> str:
    lines = [f"Ratings: {result['ratings']['source']} ({result['ratings']['format']})", ""]
    for title, text, header, rows in sections(result):
        lines += [f"## {title}", "", text + ".", "", markdown(header, rows), ""]
    extra = notes(result)
    if extra:
        lines += ["Notes:", ""] + [f"- {n}" for n in extra] + [""]
    return "\n".join(lines)


def clean(value):
    """JSON-safe: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(result: dict, path) -> None:
    text = json.dumps(clean(result), indent=1, allow_nan=False)
    if str(path) == "-":
        print(text)
        return
    from bench.files import write_atomic

    write_atomic(Path(path), (text + "\n").encode("utf-8"), fsync=False)
