"""`bench report --html`: a static HTML report that opens from ``file://`` with no network.

``<out>/html/index.html`` holds, per suite, the leaderboard (click a column header to sort it),
the scatter plot, and a gallery: per subject its reference images, then every prompt with each
run's images side by side and their per-image scores, with filters by subject, category, run
and seed. Style and script are inline; there is no CDN and no request to anything but the image
files. Images are referenced by relative paths (``link``, the default: keep the folder next to
the runs) or copied into the folder (``copy``: the folder can be moved or zipped on its own).

URL parameters, for links and for the browser test: ``?sort=<column title>&dir=asc|desc``
sorts the leaderboard on load; ``?eager=1`` loads every image at once instead of lazily.
The page writes what a test needs into ``<pre id="bench-status">`` (JSON): script errors and
failed resources, how many images loaded, and the current sort.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

from bench.report.aggregate import aggregation_text, interval_text, intervals, run_warnings
from bench.report.figures import scatter_plot, suite_scatter_axes
from bench.report.leaderboard import (RANDOM_STAMP, column_plan, comparison_table, leaderboard_table, stat_notes,
                                      suite_columns)
from bench.report.load import DASH, PAPER_DIR, run_cells
from bench.store import RunStore

LAZY_ABOVE = 400                 # more images than this in a suite: the gallery loads them lazily


def escape(value) -> str:
    """Text made safe for HTML element content and quoted attribute values."""
    return html.escape(str(value), quote=True)


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{float(value):.6g}"


def _key_order(key: str) -> tuple[int, int]:
    seed, index = key.rsplit("/", 2)[1:]
    return int(seed[1:]), int(index[1:])


class ImageSources:
    """Turns an image file into the src the page uses: a relative path, or a copy in the folder."""

    def __init__(self, out: Path, copy: bool):
        self.out, self.copy, self.copied = out, copy, {}

    def src(self, path: Path, folder: str) -> str:
        path = Path(path).resolve()
        if not self.copy:
            return quote(Path(os.path.relpath(path, self.out.resolve())).as_posix())
        if path not in self.copied:
            target = self.out / "files" / folder / f"{len(self.copied):06d}{path.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.copied[path] = target.relative_to(self.out).as_posix()
        return self.copied[path]


# ---- the leaderboard ------------------------------------------------------------------------
def leaderboard_html(df, runs, suite: str, paper_dir: Path, warnings: dict, stats=None) -> tuple[str, list, list]:
    table, plan, numeric = leaderboard_table(df, runs, suite, paper_dir, warnings, stats)
    metric_titles = {title for title, _, _ in plan}
    head = "".join(f'<th data-col="{escape(c)}" title="click to sort">{escape(c) if c else "row"}</th>'
                   for c in table.columns)
    body = []
    for (_, row), values in zip(table.iterrows(), numeric):
        kind = row[""]
        flagged = kind == "ours" and str(row["Check"]).startswith("⚠")
        cells = []
        for col in table.columns:
            if col in metric_titles:
                sort_value = _number(values.get(col, (math.nan,))[0])
            elif col == "Images":
                sort_value = "" if row[col] == DASH else str(row[col])
            else:
                sort_value = None
            attr = f' data-value="{sort_value}"' if sort_value is not None else ""
            cells.append(f"<td{attr}>{escape(row[col])}</td>")
        body.append(f'<tr class="{kind}{" flagged" if flagged else ""}">{"".join(cells)}</tr>')
    markup = (f'<div class="scroll"><table class="leaderboard" data-suite="{escape(suite)}"><thead><tr>{head}</tr>'
              f'</thead><tbody>{"".join(body)}</tbody></table></div>')
    return markup, plan, numeric


# ---- the gallery ----------------------------------------------------------------------------
def gallery_html(df, runs, suite: str, plan, images: ImageSources) -> str:
    mine = df[df["suite"] == suite]
    infos = list(runs[runs["suite"] == suite].itertuples(index=False))
    titles = {ids[0]: title for title, _, ids in plan if ids}
    scores: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for rec in mine.itertuples(index=False):
        if rec.metric in titles:
            scores.setdefault((rec.run, rec.key), []).append((titles[rec.metric], rec.value))
    order = {title: i for i, (title, _, _) in enumerate(plan)}
    samples, by_cell = {}, {}
    records = {}
    for info in infos:
        store = RunStore(info.run_dir)
        for cell, sample in run_cells(store.read_run(), Path(info.run_dir)).items():
            samples.setdefault(cell, sample)
        records[info.run] = store.records()
        for key, rec in records[info.run].items():
            by_cell.setdefault(key.rsplit("/", 2)[0], {}).setdefault(info.run, []).append(key)
    total_images = sum(len(r) for r in records.values())
    loading = "lazy" if total_images > LAZY_ABOVE else "eager"
    cells = sorted(by_cell, key=lambda c: (c.split("/")[1], int(c.rsplit("/", 1)[1])))
    subjects: dict[str, list[str]] = {}
    for cell in cells:
        subjects.setdefault(cell.split("/")[1], []).append(cell)
    seeds = sorted({_key_order(k)[0] for r in records.values() for k in r})
    categories = sorted({(samples[c].category or "") for c in cells if c in samples} - {""})

    def options(values, label):
        return f'<option value="">all {label}</option>' + "".join(
            f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)

    run_boxes = "".join(f'<label><input type="checkbox" class="f-run" value="{escape(i.run)}" checked> '
                        f'{escape(i.label)} <small>({escape(i.run)})</small></label>' for i in infos)
    filters = (f'<div class="filters">'
               f'<label>subject <select class="f-subject">{options(subjects, "subjects")}</select></label>'
               f'<label>category <select class="f-category">{options(categories, "categories")}</select></label>'
               f'<label>seed <select class="f-seed">{options(seeds, "seeds")}</select></label>'
               f'<span class="runs">runs: {run_boxes}</span> <span class="f-count"></span></div>')
    parts = [filters]
    for subject, subject_cells in subjects.items():
        first = samples.get(subject_cells[0])
        category = first.category if first else ""
        refs = (first.reference_images or first.subject_images) if first else ()
        ref_html = "".join(f'<img class="ref" src="{escape(images.src(p, "references"))}" alt="reference {escape(p.name)}" '
                           f'loading="{loading}" title="{escape(p.name)}">' for p in refs) \
            or '<span class="muted">reference images not available here</span>'
        noun = f" — {escape(first.class_noun)}" if first else ""
        parts.append(f'<section class="subject" data-subject="{escape(subject)}" data-category="{escape(category)}">'
                     f'<h3>{escape(subject)}<small>{noun}{" · " + escape(category) if category else ""}</small></h3>'
                     f'<div class="refs">{ref_html}</div>')
        for cell in subject_cells:
            sample = samples.get(cell)
            prompt = sample.prompt if sample else f"prompt {int(cell.rsplit('/', 1)[1])}"
            extra = (f' <small class="muted">scored against: “{escape(sample.eval_text)}”</small>'
                     if sample and sample.eval_text and sample.eval_text != sample.prompt else "")
            parts.append(f'<div class="cell"><p class="prompt">“{escape(prompt)}”{extra}</p><div class="runs-row">')
            if sample and sample.source_image and sample.source_image.exists():     # editing: what was edited
                parts.append(f'<div class="run-col source"><div class="run-name">source image</div><figure>'
                             f'<img src="{escape(images.src(sample.source_image, "sources"))}" alt="source" '
                             f'loading="{loading}"></figure></div>')
            for info in infos:
                keys = sorted(by_cell[cell].get(info.run, []), key=_key_order)
                stamp = '<span class="stamp">random weights</span>' if info.random_weights else ""
                figures = []
                for key in keys:
                    path = RunStore(info.run_dir).root / records[info.run][key]["image"]
                    seed, index = _key_order(key)
                    values = sorted(scores.get((info.run, key), []), key=lambda tv: order.get(tv[0], 99))
                    score_text = "<br>".join(f"{escape(t)} {'–' if v != v else f'{v:.3f}'}" for t, v in values)
                    src = images.src(path, f"runs/{info.run}") if path.exists() else ""
                    figures.append(f'<figure data-seed="{seed}"><img src="{escape(src)}" alt="{escape(key)}" '
                                   f'loading="{loading}" title="{escape(key)}"><figcaption>seed {seed} · image '
                                   f'{index}<br>{score_text}</figcaption></figure>')
                body = "".join(figures) or '<span class="muted">no image</span>'
                parts.append(f'<div class="run-col" data-run="{escape(info.run)}"><div class="run-name">'
                             f'{escape(info.label)} {stamp}</div><div class="figs">{body}</div></div>')
            parts.append("</div></div>")
        parts.append("</section>")
    return f'<div class="gallery" data-suite="{escape(suite)}">{"".join(parts)}</div>'


# ---- the page -------------------------------------------------------------------------------
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.5em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.banner{background:#b00;color:#fff;padding:.6em 1em;font-weight:bold;border-radius:4px}
.stamp{background:#b00;color:#fff;font-size:.75em;padding:0 .4em;border-radius:3px;white-space:nowrap}
table.leaderboard{border-collapse:collapse;font-size:13px;margin:.6em 0}
table.leaderboard th{background:#eee;cursor:pointer;user-select:none;padding:.3em .6em;text-align:left;white-space:nowrap}
table.leaderboard th.asc:after{content:" \\25B2"}table.leaderboard th.desc:after{content:" \\25BC"}
table.leaderboard td{border-top:1px solid #e4e4e4;padding:.25em .6em;white-space:nowrap}
tr.paper td{color:#666}tr.ours td:first-child{font-weight:bold;color:#1f5fa8}tr.flagged td{background:#fff4cc}
.scroll{overflow-x:auto}.warnings{background:#fff4cc;padding:.4em 1em;border-left:4px solid #e0a800}
img.scatter{max-width:760px;width:100%;border:1px solid #ddd}
.filters{position:sticky;top:0;background:#f7f7f7;padding:.5em;border:1px solid #ddd;z-index:2}
.filters label{margin-right:1em}.muted{color:#888}
.subject{border-top:1px solid #ccc;margin-top:1em}.subject h3 small{color:#666;font-weight:normal;margin-left:.5em}
img.ref{height:128px;margin:0 .3em .3em 0;border:2px solid #1f5fa8}
.cell{margin:.4em 0 1em 0}.prompt{margin:.2em 0;font-style:italic}
.runs-row{display:flex;gap:1em;flex-wrap:wrap}.run-col{border:1px solid #e0e0e0;padding:.3em;border-radius:4px}
.run-name{font-weight:bold;font-size:12px;margin-bottom:.2em}.figs{display:flex;gap:.4em;flex-wrap:wrap}
figure{margin:0;width:136px}figure img{width:128px;height:128px;object-fit:contain;background:#fafafa;display:block}
figcaption{font-size:11px;color:#444}.hidden{display:none!important}
"""

# Catches script errors and failed resources before anything else runs.
HEAD_SCRIPT = """
window.benchErrors=[];
window.addEventListener('error',function(e){var t=e.target;
 window.benchErrors.push(t&&t!==window&&(t.src||t.href)?'resource failed: '+(t.src||t.href):
  'script error: '+(e.message||'?')+' at '+(e.filename||'')+':'+(e.lineno||''));},true);
window.addEventListener('unhandledrejection',function(e){window.benchErrors.push('unhandled rejection: '+e.reason);});
(function(){var ce=console.error;console.error=function(){window.benchErrors.push('console.error: '+
 Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};})();
"""

BODY_SCRIPT = """
(function(){
var params=new URLSearchParams(location.search);
if(params.get('eager')==='1'){document.querySelectorAll('img[loading=lazy]').forEach(function(i){i.loading='eager';});}
var sortState={};
function cellValue(tr,i){var td=tr.children[i];var v=td.getAttribute('data-value');
 if(v!==null){return v===''?null:parseFloat(v);}var t=td.textContent.trim();return t===''||t==='\\u2013'?null:t.toLowerCase();}
function sortTable(table,th,dir){
 var i=Array.prototype.indexOf.call(th.parentNode.children,th);var tbody=table.tBodies[0];
 var rows=Array.prototype.slice.call(tbody.rows);
 rows.sort(function(a,b){var x=cellValue(a,i),y=cellValue(b,i);
  if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
  var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
  return dir==='asc'?c:-c;});
 rows.forEach(function(r){tbody.appendChild(r);});
 table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
 th.classList.add(dir);sortState={column:th.getAttribute('data-col'),dir:dir,
  first:rows.length?rows[0].children[1].textContent:null};writeStatus();}
document.querySelectorAll('table.leaderboard').forEach(function(table){
 table.querySelectorAll('th').forEach(function(th){th.addEventListener('click',function(){
  var metric=table.tBodies[0].rows.length&&table.tBodies[0].rows[0].children[
   Array.prototype.indexOf.call(th.parentNode.children,th)].hasAttribute('data-value');
  var dir=th.classList.contains('desc')?'asc':th.classList.contains('asc')?'desc':(metric?'desc':'asc');
  sortTable(table,th,dir);});});});
document.querySelectorAll('.gallery').forEach(function(g){
 var f=function(s){return g.querySelector(s);};
 function apply(){var subject=f('.f-subject').value,category=f('.f-category').value,seed=f('.f-seed').value;
  var runs={};g.querySelectorAll('.f-run').forEach(function(b){runs[b.value]=b.checked;});var shown=0;
  g.querySelectorAll('.subject').forEach(function(s){var on=(!subject||s.dataset.subject===subject)&&
   (!category||s.dataset.category===category);s.classList.toggle('hidden',!on);if(on)shown++;});
  g.querySelectorAll('.run-col[data-run]').forEach(function(c){c.classList.toggle('hidden',!runs[c.dataset.run]);});
  g.querySelectorAll('figure[data-seed]').forEach(function(fig){fig.classList.toggle('hidden',!!seed&&fig.dataset.seed!==seed);});
  f('.f-count').textContent=shown+' subject(s) shown';}
 g.querySelectorAll('select,input').forEach(function(el){el.addEventListener('change',apply);});
 ['subject','category','seed'].forEach(function(k){var v=params.get(k);if(v!==null){f('.f-'+k).value=v;}});
 apply();});
function writeStatus(){var imgs=Array.prototype.slice.call(document.images);
 var loaded=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
 var broken=imgs.filter(function(i){return i.complete&&i.naturalWidth===0;}).map(function(i){return i.getAttribute('src');});
 document.getElementById('bench-status').textContent=JSON.stringify({errors:window.benchErrors,
  images:{total:imgs.length,loaded:loaded,broken:broken},sort:sortState,ready:document.readyState==='complete'});}
var wanted=params.get('sort');
if(wanted){document.querySelectorAll('table.leaderboard th').forEach(function(th){
 if(th.getAttribute('data-col')===wanted){sortTable(th.closest('table'),th,params.get('dir')==='asc'?'asc':'desc');}});}
writeStatus();window.addEventListener('load',writeStatus);
})();
"""


def statistics_html(stats, settings, versus: str | None) -> str:
    """The intervals' description, the paired comparison table and the statistics notes."""
    comparison = comparison_table(stats, versus) if versus else None
    markup = f'<p class="muted">{_e(interval_text(settings, versus))}.</p>'
    if comparison is not None:
        head = "".join(f"<th>{_e(c)}</th>" for c in comparison.columns)
        body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
                       for row in comparison.itertuples(index=False))
        markup += (f'<h3>Paired comparison against {_e(versus)}</h3><p>Differences on the keys both runs hold, '
                   f'their intervals, sign-flip p-values (Holm-adjusted over the table) and the minimum detectable '
                   f'effect (power 0.8).</p><div class="scroll"><table class="comparison"><thead><tr>{head}</tr>'
                   f'</thead><tbody>{body}</tbody></table></div>')
    notes = stat_notes(stats)
    if notes:
        markup += "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    return markup


def write_html(df, runs, out: Path, paper_dir: Path = PAPER_DIR, copy_images: bool = False, settings=None,
               versus: str | None = None) -> Path:
    """Write ``out/index.html`` (plus the scatter plots, and the images with ``copy_images``);
    ``settings`` and ``versus`` as for the markdown leaderboard (docs/statistics.md)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = ImageSources(out, copy_images)
    random = bool(runs["random_weights"].any())
    sections = []
    for suite in sorted(runs["suite"].unique()):
        mine = df[df["suite"] == suite]
        suite_runs = runs[runs["suite"] == suite]
        warnings = run_warnings(mine, suite_runs)
        against = versus if versus in set(suite_runs["run"]) else None
        stats = intervals(mine, settings, against)
        table, plan, numeric = leaderboard_html(df, runs, suite, paper_dir, warnings, stats)
        x, y = suite_scatter_axes(suite)
        scatter = out / f"{suite}-scatter.png"
        has_scatter = scatter_plot(numeric, x, y, scatter, f"{suite}: {x} vs {y}",
                                   RANDOM_STAMP if suite_runs["random_weights"].any() else None)
        flagged = [f"<li><code>{escape(r)}</code>: {escape('; '.join(n))}</li>" for r, n in warnings.items() if n]
        ids = "; ".join(f"{escape(t)}: " + (", ".join(f"<code>{escape(i)}</code>" for i in ids) or "not measured")
                        for t, _, ids in column_plan(mine["metric"].unique(), suite_columns(suite)))
        sections.append(
            f'<section class="suite" id="suite-{escape(suite)}"><h2>{escape(suite)}</h2>'
            f'<p>Our rows: {escape(aggregation_text(suite))}. Rows marked <i>paper</i> are published numbers '
            f'(docs/protocols.md section 5), not rerun here; {DASH} means not measured. Click a column to sort.</p>'
            + table + statistics_html(stats, settings, against)
            + (f'<div class="warnings"><b>Check:</b> rows marked ⚠ are not comparable as they stand:<ul>'
               f'{"".join(flagged)}</ul></div>' if flagged else "")
            + f'<p class="muted">Metric ids (they name the backbone): {ids}.</p>'
            + (f'<h3>{escape(x)} vs {escape(y)}</h3><img class="scatter" src="{escape(scatter.name)}" alt="scatter plot">'
               if has_scatter else "")
            + f'<h3>Gallery</h3>{gallery_html(df, runs, suite, plan, images)}</section>')
    banner = f'<p class="banner">{escape(RANDOM_STAMP)}</p>' if random else ""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>bench report</title>'
            f'<meta name="viewport" content="width=device-width"><style>{CSS}</style>'
            f'<script>{HEAD_SCRIPT}</script></head><body><h1>Benchmark report</h1>'
            f'<p class="muted">Written by <code>python -m bench report --html</code> on '
            f'{escape(time.strftime("%Y-%m-%d %H:%M"))} from {len(runs)} run(s). Protocols and sources: '
            f'docs/protocols.md in the repository.</p>{banner}{"".join(sections)}'
            f'<pre id="bench-status" hidden></pre><script>{BODY_SCRIPT}</script></body></html>')
    path = out / "index.html"
    tmp = out / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
