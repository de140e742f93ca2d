"""`bench report --humans RATINGS`: the agreement-with-people section of the leaderboards and of
the HTML report. The figures are `bench agree`'s (bench.agree, docs/agreement.md), computed with
the report's runs as the scores: a run whose method is a rated method adds its metrics; the
other runs are left out (and counted in the notes)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from bench.agree.output import markdown, notes, sections


@dataclass
class HumanSection:
    result: dict

    def markdown(self) -> list[str]:
        s = self.result["ratings"]
        lines = ["## Agreement with human ratings", "",
                 f"Ratings: `{s['source']}` ({s['format']}, {len(s['raters'])} raters, level {s['level']}). "
                 f"Figures as `python -m bench agree` gives them (docs/agreement.md).", ""]
        for title, text, header, rows in sections(self.result):
            lines += [f"### {title}", "", text + ".", "", markdown(header, rows), ""]
        lines += [f"- {n}" for n in notes(self.result)] + ([""] if notes(self.result) else [])
        return lines

    def html(self) -> str:
        e = html.escape
        s = self.result["ratings"]
        parts = [f'<section class="humans" id="humans"><h2>Agreement with human ratings</h2><p class="muted">Ratings: '
                 f'<code>{e(s["source"])}</code> ({e(s["format"])}, {len(s["raters"])} raters, level {e(s["level"])}); '
                 f'figures as <code>python -m bench agree</code> gives them (docs/agreement.md).</p>']
        for title, text, header, rows in sections(self.result):
            head = "".join(f"<th>{e(c)}</th>" for c in header)
            body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows)
            parts.append(f'<h3>{e(title)}</h3><p>{e(text)}.</p><div class="scroll"><table><thead><tr>{head}</tr>'
                         f'</thead><tbody>{body}</tbody></table></div>')
        extra = notes(self.result)
        if extra:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in extra) + "</ul>")
        return "".join(parts) + "</section>"


def human_section(ratings_path, run_dirs, settings=None, progress: bool = False) -> HumanSection:
    """Read the ratings, join the runs' scores by method, compute every figure. ``settings``
    (bench.stats.analysis.Settings) gives the resamples, seed and alpha of the intervals."""
    import pandas as pd

    from bench.agree.analysis import analyse
    from bench.agree.ratings import SCORE_COLUMNS, normalise_method
    from bench.agree.readers import read_ratings
    from bench.agree.resample import Boot
    from bench.agree.scores import collect, join, read_score_source

    ratings = read_ratings(ratings_path)
    scores, extra = collect((), ratings)
    rated = {normalise_method(m) for m in ratings.methods}
    frames, seen, left = [scores], set(), []
    for run_dir in run_dirs:
        table = read_score_source(run_dir)
        method = normalise_method(table["run"].iloc[0]) if len(table) else ""
        if method not in rated or method in seen:
            left.append(str(run_dir))
            continue
        seen.add(method)
        joined, missing = join(table, ratings, str(run_dir), strict=False)
        if missing:
            extra.append(f"{run_dir}: {missing} scored item(s) without ratings left out")
        frames.append(joined)
    if left:
        extra.append(f"runs without ratings of their method (or a second run of one), left out: {', '.join(left)}")
    scores = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=list(SCORE_COLUMNS))
    boot = Boot(settings.resamples, settings.seed, settings.alpha) if settings is not None else Boot()
    return HumanSection(analyse(ratings, scores, boot, notes=extra, progress=progress))
