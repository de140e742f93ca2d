"""The arena section of `bench report`: Bradley–Terry ratings, the win matrix and the position bias
of the ``bench arena`` results found in ``<report out>/arena/arena-*.json`` whose runs are all among
the reported runs (docs/judge.md, "Arena")."""

from __future__ import annotations

from html import escape
from pathlib import Path

from bench.report.load import DASH

ARENA_DIR = "arena"
#: arena results read at most (each a few KiB; a folder of thousands is not ours)
MAX_RESULTS = 50


def _number(value, digits: int = 0) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """A run label safe inside a markdown table cell (no pipes, no line breaks, no raw HTML)."""
    return escape(" ".join(str(text).split())).replace("|", "\\|")


def find_results(out: Path, run_dirs) -> list[dict]:
    """The arena results under ``out/arena/`` that compare only runs among ``run_dirs``."""
    from bench.files import read_json

    folder = Path(out) / ARENA_DIR
    if not folder.is_dir():
        return []
    wanted = {str(Path(d).resolve()) for d in run_dirs}
    found = []
    for path in sorted(folder.glob("arena-*.json"))[:MAX_RESULTS]:
        try:
            result = read_json(path, "arena result", max_bytes=8 * 2**20)
        except Exception:          # a broken or foreign file is no arena result: the report goes on
            continue
        runs = result.get("runs") if isinstance(result, dict) else None
        if isinstance(runs, list) and runs and all(isinstance(r, dict) and str(Path(str(r.get("run_dir"))).resolve())
                                                   in wanted for r in runs):
            found.append(result)
    return found


def _rows(result: dict) -> list[tuple]:
    kinds = result.get("kinds") or []
    rows = []
    for r in sorted(result["runs"], key=lambda r: -(r.get("rating") or 0)):
        by_kind = r.get("by_kind") or {}
        rows.append((r.get("run"), f"{_number(r.get('rating'))} [{_number(r.get('rating_low'))}, "
                                   f"{_number(r.get('rating_high'))}]",
                     *(_number((by_kind.get(k) or {}).get("rating")) for k in kinds),
                     f"{r.get('wins', 0)} / {r.get('ties', 0)} / {r.get('losses', 0)}"))
    return rows


def _bias_text(result: dict) -> str:
    parts = [f"{k.upper()} {_number(v.get('position_bias'), 2)} ({v.get('pairs', 0)} pairs)"
             for k, v in (result.get("position_bias_by_kind") or {}).items()]
    return (f"position bias {_number(result.get('position_bias'), 2)} over {result.get('position_bias_pairs', 0)} "
            f"pairs asked in both orders ({'; '.join(parts)}): the share whose two verdicts picked the same slot "
            "rather than the same image (0: the judge ignores position; 1: it always picks one slot)")


def arena_markdown(results: list[dict]) -> list[str]:
    """Markdown lines of the arena section (empty without results)."""
    lines = []
    for result in results:
        kinds = result.get("kinds") or []
        header = ["Run", "Rating [95% interval]", *(f"{k.upper()} rating" for k in kinds), "W / T / L"]
        lines += [f"## Arena: pairwise judge {_cell(result.get('judge'))}", "",
                  f"Bradley–Terry ratings (Elo points, 1000 = average) from {result.get('games')} games "
                  f"({', '.join(k.upper() for k in kinds)}, each pair asked in both orders, a tie half a win), "
                  f"intervals from a cluster bootstrap over {result.get('subjects')} subjects "
                  f"({result.get('resamples')} resamples, seed {result.get('seed')}); "
                  f"failed verdicts {sum((result.get('failures') or {}).values())} (recorded, not counted). "
                  f"Position{_bias_text(result)[len('position'):]}.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in _rows(result)]
        matrix = result.get("win_matrix") or {}
        labels = matrix.get("runs") or []
        if labels:
            lines += ["", "Win rate of the row's run against the column's (ties as halves):", "",
                      "| | " + " | ".join(_cell(x) for x in labels) + " |", "|---|" + "---|" * len(labels)]
            for label, row in zip(labels, matrix.get("win_rate") or []):
                lines.append(f"| {_cell(label)} | " + " | ".join(_number(x, 2) for x in row) + " |")
        lines.append("")
    return lines


def _matrix_html(matrix: dict) -> str:
    labels = matrix.get("runs") or []
    if not labels:
        return ""
    rows = "".join(f"<tr><th>{escape(str(label))}</th>" + "".join(f"<td>{_number(x, 2)}</td>" for x in row) + "</tr>"
                   for label, row in zip(labels, matrix.get("win_rate") or []))
    return ("<p>Win rate of the row's run against the column's (ties as halves):</p><table><thead><tr><th></th>"
            + "".join(f"<th>{escape(str(x))}</th>" for x in labels) + f"</tr></thead><tbody>{rows}</tbody></table>")


def arena_html(results: list[dict]) -> str:
    """The same section as HTML (every value escaped)."""
    parts = []
    for result in results:
        kinds = result.get("kinds") or []
        header = ["Run", "Rating [95% interval]", *(f"{k.upper()} rating" for k in kinds), "W / T / L"]
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in _rows(result))
        parts.append(f'<section class="arena"><h3>Arena: pairwise judge {escape(str(result.get("judge")))}</h3>'
                     f"<p>Bradley–Terry ratings (Elo points) from {escape(str(result.get('games')))} games, intervals "
                     f"from a cluster bootstrap over {escape(str(result.get('subjects')))} subjects; "
                     f"{escape(_bias_text(result))}.</p><table><thead><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in header) + f"</tr></thead><tbody>{body}</tbody></table>"
                     + _matrix_html(result.get("win_matrix") or {}) + "</section>")
    return "".join(parts)
