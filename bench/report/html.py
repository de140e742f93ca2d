"""`bench report --html`: a static HTML report that opens from ``file://`` with no network, and
stays fast at 18,000 images a run.

Pages:

- ``<out>/html/index.html``: per suite the leaderboard (click a column header to sort it), the
  scatter plot, and the gallery's table of subjects (class, category, images per run, the first
  thumbnail of each run) linking to the subjects' pages;
- ``<out>/html/gallery/<suite>/<subject>.html``: the subject's reference images, then every prompt
  with each run's images side by side (lazy-loaded thumbnails, each linking to its full image)
  and their per-image scores, with links to the previous and next subject.

Filters (subject and category on the index; seed and runs everywhere) are URL parameters
(``?subject=dog&category=live&seed=1&hide=<run>,<run>``): every link between the pages carries
them, so a filter set on the index holds on every subject page. Thumbnails (bench.report.thumbs)
are made once and kept in ``<out>/html/thumbs/``. Style and script are inline; there is no CDN and
no request to anything but the image files. Images are referenced by relative paths (``link``,
the default: keep the folder next to the runs) or copied into the folder (``copy``: the folder
can be moved or zipped on its own).

URL parameters for links and for the browser test: ``?sort=<column title>&dir=asc|desc`` sorts
the leaderboard on load; ``?eager=1`` loads every image at once instead of lazily. Each page
writes what a test needs into ``<pre id="bench-status">`` (JSON): script errors and failed
resources, how many images loaded, the current sort, the links that carry the filters, and when
the document was ready (``dom_ready_ms``).
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

from bench.files import write_atomic
from bench.report.aggregate import aggregation_text, interval_text, suite_summary
from bench.report.figures import scatter_plot, suite_scatter_axes
from bench.report.arena import arena_html, find_results
from bench.report.leaderboard import (RANDOM_STAMP, column_plan, comparison_table, leaderboard_table, stat_notes,
                                      suite_columns)
from bench.report.load import DASH, PAPER_DIR, run_cells
from bench.report.thumbs import ensure_thumbnails
from bench.store import RunStore



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
    """Turns an image file into the src a page uses: a path relative to the page's folder, to the
    file where it is or (``copy``) to a copy in the report folder."""

    def __init__(self, out: Path, copy: bool):
        self.out, self.copy, self.copied = out, copy, {}
        self._root = out.resolve()

    def rel(self, path: Path, base: Path) -> str:
        return quote(Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix())

    def src(self, path: Path, folder: str, base: Path | None = None) -> str:
        base = self.out if base is None else base
        path = Path(path).resolve()
        if not self.copy:
            return self.rel(path, base)
        if path not in self.copied:
            target = self.out / "files" / folder / f"{len(self.copied):06d}{path.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.copied[path] = target
        return self.rel(self.copied[path], base)


# ---- the leaderboard ------------------------------------------------------------------------
def leaderboard_html(df, runs, suite: str, paper_dir: Path, warnings: dict, stats=None,
                     settings=None) -> tuple[str, list, list]:
    table, plan, numeric = leaderboard_table(df, runs, suite, paper_dir, warnings, stats, settings)
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
#: A page or folder name of the gallery: a plain name (letters, digits, '.', '_', '-') of at most
#: this many characters is used as it is; any other name becomes its plain characters (others
#: replaced by '_', cut to fit) plus '~' and a 16-digit digest of the whole name, so every page
#: name fits a file system's 255 bytes, stays unique, and needs no percent-encoding in a link
#: (a file named '%C3%A9.html' would be looked up as 'é.html').
MAX_PAGE_NAME = 100
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _page_name(name: str) -> str:
    if len(name) <= MAX_PAGE_NAME and _PLAIN.fullmatch(name):
        return name
    import hashlib

    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name[:MAX_PAGE_NAME - 20]).lstrip(".") + "~" + digest


def _subject_page(suite: str, subject: str) -> str:
    """The gallery page of one subject, relative to the report folder."""
    return f"gallery/{_page_name(suite)}/{_page_name(subject)}.html"


def gallery_images(df, runs, suite: str, plan) -> "pd.DataFrame":
    """One row per recorded image of the suite's runs: run, key, cell, subject, seed, index, path,
    sha256, and ``scores`` (the caption text: each leaderboard column's value), built column-wise."""
    import pandas as pd

    frames = []
    for info in runs[runs["suite"] == suite].itertuples(index=False):
        store = RunStore(info.run_dir)
        records = store.records()
        frame = pd.DataFrame({"key": list(records), "image": [r["image"] for r in records.values()],
                              "sha256": [r["sha256"] for r in records.values()]})
        frame["run"] = info.run
        frame["path"] = [str(store.root / p) for p in frame["image"]]
        frames.append(frame)
    images = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["key", "image", "sha256", "run", "path"])
    parts = images["key"].str.rsplit("/", n=2, expand=True) if len(images) else None
    images["cell"] = parts[0] if parts is not None else []
    images["seed"] = parts[1].str[1:].astype(int) if parts is not None else []
    images["index"] = parts[2].str[1:].astype(int) if parts is not None else []
    images["subject"] = images["cell"].str.split("/").str[1]
    images["prompt"] = images["cell"].str.rsplit("/", n=1).str[1].astype(int) if len(images) else []
    titles = [(ids[0], title) for title, _, ids in plan if ids]
    mine = df[(df["suite"] == suite) & df["metric"].isin([m for m, _ in titles])]
    wide = mine.pivot_table(index=["run", "key"], columns="metric", values="value", aggfunc="first")
    caption = pd.Series("", index=wide.index)
    for metric, title in titles:
        if metric in wide:
            text = wide[metric].map(lambda v: "–" if v != v else f"{v:.3f}")
            caption = caption + f"{escape(title)} " + text + "<br>"
    images = images.join(caption.rename("scores"), on=["run", "key"])
    images["scores"] = images["scores"].fillna("")
    return images.sort_values(["subject", "prompt", "run", "seed", "index"], kind="stable", ignore_index=True)


def _filters(seeds, infos, categories=None, subjects=None) -> str:
    def options(values, label):
        return f'<option value="">all {label}</option>' + "".join(
            f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    boxes = "".join(f'<label><input type="checkbox" class="f-run" value="{escape(i.run)}" checked> '
                    f'{escape(i.label)} <small>({escape(i.run)})</small></label>' for i in infos)
    return ('<div class="filters">'
            + (f'<label>subject <select class="f-subject">{options(subjects, "subjects")}</select></label>'
               if subjects is not None else "")
            + (f'<label>category <select class="f-category">{options(categories, "categories")}</select></label>'
               if categories is not None else "")
            + f'<label>seed <select class="f-seed">{options(seeds, "seeds")}</select></label>'
            f'<span class="runs">runs: {boxes}</span> <span class="f-count"></span></div>')


def gallery(df, runs, suite: str, plan, out: Path, images: ImageSources, thumbs: dict[str, str], page) -> str:
    """The suite's gallery: one page per subject (written here through ``page(path, title, body)``),
    and the index's part (returned): the subjects with their first thumbnails, linking to them.
    Every image appears as its thumbnail, linking to the full image; filters (subject, category,
    seed, runs) travel between the pages in the URL."""
    infos = list(runs[runs["suite"] == suite].itertuples(index=False))
    samples = {}
    for info in infos:
        for cell, sample in run_cells(RunStore(info.run_dir).read_run(), Path(info.run_dir)).items():
            samples.setdefault(cell, sample)
    table = gallery_images(df, runs, suite, plan)
    seeds = sorted(table["seed"].unique().tolist())
    subjects = list(dict.fromkeys(table["subject"]))
    category_of = {s.subject: s.category or "" for s in samples.values()}
    categories = sorted(set(category_of.values()) - {""})
    loading = "lazy"

    prefixes: dict[tuple[str, Path], str] = {}          # relative path from a page folder to a folder

    def prefix(folder: Path, base: Path) -> str:
        if (str(folder), base) not in prefixes:
            relative = os.path.relpath(Path(folder).resolve(), base.resolve())
            prefixes[(str(folder), base)] = quote(Path(relative).as_posix())
        return prefixes[(str(folder), base)]
    roots = {i.run: RunStore(i.run_dir).root for i in infos}

    def thumb(row, base: Path) -> str:
        """The thumbnail linking to the full image; paths built as strings (36,000 of them)."""
        src = thumbs.get(row.sha256)
        if images.copy or os.path.isabs(row.image):
            full = images.src(Path(row.path), f"runs/{row.run}", base) if src or Path(row.path).exists() else ""
        else:
            full = f"{prefix(roots[row.run], base)}/{quote(row.image)}"
        shown = f"{prefix(out / 'thumbs', base)}/{src}" if src else full
        return (f'<a href="{escape(full)}"><img src="{escape(shown)}" alt="{escape(row.key)}" loading="{loading}" '
                f'title="{escape(row.key)}"></a>')

    rows = []
    for position, (subject, group) in enumerate(table.groupby("subject", sort=False)):
        href = _subject_page(suite, subject)
        base = (out / href).parent
        cells = [s for s in samples.values() if s.subject == subject]
        first = min(cells, key=lambda s: s.prompt_index) if cells else None
        category = category_of.get(subject, "")
        refs = (first.reference_images or first.subject_images) if first else ()
        ref_html = "".join(f'<a href="{escape(images.src(p, "references", base))}"><img class="ref" '
                           f'src="{escape(images.src(p, "references", base))}" alt="reference {escape(p.name)}" '
                           f'loading="{loading}" title="{escape(p.name)}"></a>' for p in refs) \
            or '<span class="muted">reference images not available here</span>'
        parts = [f'<section class="subject" data-subject="{escape(subject)}" data-category="{escape(category)}">'
                 f'<div class="refs">{ref_html}</div>']
        for (prompt_index, cell), cell_rows in group.groupby(["prompt", "cell"], sort=True):
            sample = samples.get(cell)
            prompt = sample.prompt if sample else f"prompt {prompt_index}"
            extra = (f' <small class="muted">scored against: “{escape(sample.eval_text)}”</small>'
                     if sample and sample.eval_text and sample.eval_text != sample.prompt else "")
            parts.append(f'<div class="cell"><p class="prompt">“{escape(prompt)}”{extra}</p><div class="runs-row">')
            if sample and sample.source_image and sample.source_image.exists():     # editing: what was edited
                parts.append(f'<div class="run-col source"><div class="run-name">source image</div><figure>'
                             f'<img src="{escape(images.src(sample.source_image, "sources", base))}" alt="source" '
                             f'loading="{loading}"></figure></div>')
            by_run = dict(tuple(cell_rows.groupby("run", sort=False)))
            for info in infos:
                stamp = '<span class="stamp">random weights</span>' if info.random_weights else ""
                mine = by_run.get(info.run)
                figures = "".join(
                    f'<figure data-seed="{r.seed}">{thumb(r, base)}<figcaption>seed {r.seed} · image {r.index}'
                    f'<br>{r.scores}</figcaption></figure>' for r in mine.itertuples(index=False)
                ) if mine is not None else ""
                parts.append(f'<div class="run-col" data-run="{escape(info.run)}"><div class="run-name">'
                             f'{escape(info.label)} {stamp}</div><div class="figs">'
                             f'{figures or "<span class=muted>no image</span>"}</div></div>')
            parts.append("</div></div>")
        parts.append("</section>")
        previous = _subject_page(suite, subjects[position - 1]) if position else None
        following = _subject_page(suite, subjects[position + 1]) if position + 1 < len(subjects) else None
        up = os.path.relpath(out, base)
        nav = (f'<p class="nav"><a class="carry" href="{escape(up)}/index.html#gallery-{escape(suite)}">index</a>'
               + (f' · <a class="carry" href="{escape(os.path.relpath(out / previous, base))}">previous subject</a>'
                  if previous else "")
               + (f' · <a class="carry" href="{escape(os.path.relpath(out / following, base))}">next subject</a>'
                  if following else "")
               + f' · subject {position + 1} of {len(subjects)}</p>')
        noun = f" — {escape(first.class_noun)}" if first else ""
        kind = " · " + escape(category) if category else ""
        body = (f'<h2>{escape(suite)}: {escape(subject)}<small>{noun}{kind}</small></h2>'
                f'{nav}<div class="gallery" data-suite="{escape(suite)}">{_filters(seeds, infos)}{"".join(parts)}</div>'
                f'{nav}')
        page(out / href, f"{suite}: {subject}", body)
        counts = group.groupby("run").size()
        firsts = group.drop_duplicates("run")
        previews = "".join(thumb(r, out) for r in firsts.itertuples(index=False))
        rows.append(f'<tr class="subject-row" data-subject="{escape(subject)}" data-category="{escape(category)}">'
                    f'<td><a class="carry" href="{escape(href)}">{escape(subject)}</a></td>'
                    f'<td>{escape(first.class_noun) if first else ""}</td><td>{escape(category)}</td>'
                    f'<td>{", ".join(f"{escape(r)}: {int(n)}" for r, n in counts.items())}</td>'
                    f'<td class="previews">{previews}</td></tr>')
    return (f'<div class="gallery" id="gallery-{escape(suite)}" data-suite="{escape(suite)}">'
            f'{_filters(seeds, infos, categories, subjects)}'
            f'<p class="muted">One page per subject: its reference images, then every prompt with each run\'s '
            f'images (thumbnails; click one for the full image) and per-image scores. The filters carry over '
            f'to the pages.</p><table class="subjects"><thead><tr><th>subject</th><th>class</th><th>category</th>'
            f'<th>images</th><th>first images</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


# ---- the page -------------------------------------------------------------------------------
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.5em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.banner{background:#b00;color:#fff;padding:.6em 1em;font-weight:bold;border-radius:4px}
.stamp{background:#b00;color:#fff;font-size:.75em;padding:0 .4em;border-radius:3px;white-space:nowrap}
table.leaderboard{border-collapse:collapse;font-size:13px;margin:.6em 0}
table.leaderboard th{background:#eee;cursor:pointer;user-select:none;padding:.3em .6em;text-align:left;white-space:nowrap}
table.leaderboard th.asc:after{content:" \\25B2"}table.leaderboard th.desc:after{content:" \\25BC"}
table.leaderboard td{border-top:1px solid #e4e4e4;padding:.25em .6em;max-width:22em}
table.leaderboard td[data-value]{white-space:nowrap}
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
table.subjects{border-collapse:collapse}table.subjects td,table.subjects th{border-top:1px solid #e4e4e4;padding:.2em .6em;text-align:left}
td.previews img{width:64px;height:64px;object-fit:contain;margin-right:.3em;background:#fafafa}
.nav{margin:.4em 0}h2 small{color:#666;font-weight:normal;margin-left:.5em;font-size:.7em}
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
var FILTERS=['subject','category','seed','hide'];
function filterState(g){var st={};var q=function(s){return g.querySelector(s);};
 ['subject','category','seed'].forEach(function(k){var el=q('.f-'+k);if(el&&el.value)st[k]=el.value;});
 var hidden=[];g.querySelectorAll('.f-run').forEach(function(b){if(!b.checked)hidden.push(b.value);});
 if(hidden.length)st.hide=hidden.join(',');return st;}
function carry(st){document.querySelectorAll('a.carry').forEach(function(a){
 var href=a.getAttribute('data-href')||a.getAttribute('href');a.setAttribute('data-href',href);
 var hash='';var i=href.indexOf('#');if(i>=0){hash=href.slice(i);href=href.slice(0,i);}
 var q=new URLSearchParams();Object.keys(st).forEach(function(k){if(k!=='subject')q.set(k,st[k]);});
 var text=q.toString();a.setAttribute('href',href+(text?'?'+text:'')+hash);});}
document.querySelectorAll('.gallery').forEach(function(g){
 var f=function(s){return g.querySelector(s);};
 function apply(){var st=filterState(g);var hidden=(st.hide||'').split(',');var shown=0;
  g.querySelectorAll('.subject,.subject-row').forEach(function(s){var on=(!st.subject||s.dataset.subject===st.subject)&&
   (!st.category||!s.dataset.category||s.dataset.category===st.category);s.classList.toggle('hidden',!on);if(on)shown++;});
  g.querySelectorAll('[data-run]').forEach(function(c){c.classList.toggle('hidden',hidden.indexOf(c.dataset.run)>=0);});
  g.querySelectorAll('figure[data-seed]').forEach(function(fig){fig.classList.toggle('hidden',!!st.seed&&fig.dataset.seed!==st.seed);});
  var count=f('.f-count');if(count)count.textContent=shown+' subject(s) shown';
  carry(st);var q=new URLSearchParams(location.search);FILTERS.forEach(function(k){if(st[k])q.set(k,st[k]);else q.delete(k);});
  try{history.replaceState(null,'',location.pathname+(q.toString()?'?'+q.toString():'')+location.hash);}catch(e){}}
 g.querySelectorAll('select,input').forEach(function(el){el.addEventListener('change',apply);});
 ['subject','category','seed'].forEach(function(k){var v=params.get(k),el=f('.f-'+k);if(v!==null&&el){el.value=v;}});
 var hide=(params.get('hide')||'').split(',');g.querySelectorAll('.f-run').forEach(function(b){b.checked=hide.indexOf(b.value)<0;});
 apply();});
function writeStatus(){var imgs=Array.prototype.slice.call(document.images);
 var loaded=imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
 var broken=imgs.filter(function(i){return i.complete&&i.naturalWidth===0;}).map(function(i){return i.getAttribute('src');});
 var links=Array.prototype.map.call(document.querySelectorAll('a.carry'),function(a){return a.getAttribute('href');});
 var nav=performance.getEntriesByType?performance.getEntriesByType('navigation')[0]:null;
 var paint=(performance.getEntriesByType?performance.getEntriesByType('paint'):[]).filter(function(e){
  return e.name==='first-contentful-paint';}).map(function(e){return e.startTime;})[0];
 document.getElementById('bench-status').textContent=JSON.stringify({errors:window.benchErrors,
  images:{total:imgs.length,loaded:loaded,broken:broken},sort:sortState,ready:document.readyState==='complete',
  links:links,first_paint_ms:paint===undefined?null:paint,
  dom_ready_ms:nav&&nav.domContentLoadedEventEnd?nav.domContentLoadedEventEnd:null});}
var wanted=params.get('sort');
if(wanted){document.querySelectorAll('table.leaderboard th').forEach(function(th){
 if(th.getAttribute('data-col')===wanted){sortTable(th.closest('table'),th,params.get('dir')==='asc'?'asc':'desc');}});}
writeStatus();window.addEventListener('load',writeStatus);
try{new PerformanceObserver(function(){writeStatus();}).observe({type:'paint',buffered:true});}catch(e){}
})();
"""


def statistics_html(stats, settings, versus: str | None) -> str:
    """The intervals' description, the paired comparison table and the statistics notes."""
    comparison = comparison_table(stats, versus) if versus else None
    markup = f'<p class="muted">{escape(interval_text(settings, versus))}.</p>'
    if comparison is not None:
        head = "".join(f"<th>{escape(c)}</th>" for c in comparison.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
                       for row in comparison.itertuples(index=False))
        markup += (f'<h3>Paired comparison against {escape(versus)}</h3><p>Differences on the keys both runs hold, '
                   f'their intervals, sign-flip p-values (Holm-adjusted over the table) and the minimum detectable '
                   f'effect (power 0.8).</p><div class="scroll"><table class="comparison"><thead><tr>{head}</tr>'
                   f'</thead><tbody>{body}</tbody></table></div>')
    notes = stat_notes(stats, markdown=False)
    if notes:
        markup += "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
    return markup


def ceiling_html(mine, suite_runs, suite: str, settings) -> str:
    """The real-photo row's note and the cells beyond it (bench.report.ceiling)."""
    from bench.report import ceiling
    from bench.report.aggregate import summarize

    lines = ceiling.markdown_lines(summarize(mine) if len(mine) else None, suite_runs, suite, settings)
    plain = [line.replace("**", "").replace("`", "").lstrip("*").replace("*:", ":") for line in lines if line]
    return "".join(f'<p class="muted">{escape(line)}</p>' if not line.startswith("- ") else
                   f'<p class="warnings">{escape(line[2:])}</p>' for line in plain)


def _page(path: Path, title: str, body: str, random: bool) -> None:
    """Write one page of the report (style and script inline, atomically)."""
    banner = f'<p class="banner">{escape(RANDOM_STAMP)}</p>' if random else ""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width"><style>{CSS}</style>'
            f'<script>{HEAD_SCRIPT}</script></head><body>{banner}{body}'
            f'<pre id="bench-status" hidden></pre><script>{BODY_SCRIPT}</script></body></html>')
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, page.encode("utf-8"), fsync=False)


def write_html(df, runs, out: Path, paper_dir: Path = PAPER_DIR, copy_images: bool = False, settings=None,
               versus: str | None = None, humans=None) -> Path:
    """Write ``out/index.html`` (leaderboards, scatter plots, the subjects of each gallery) and one
    page per subject under ``out/gallery/<suite>/``, with thumbnails in ``out/thumbs/`` (made once);
    with ``copy_images`` the full images too; ``settings`` and ``versus`` as for the markdown
    leaderboard (docs/statistics.md). Returns the index."""
    out = Path(out)
    from bench.output_guard import guard_folder

    guard_folder(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    images = ImageSources(out, copy_images)
    random = bool(runs["random_weights"].any())
    wanted = {}
    for info in runs.itertuples(index=False):
        store = RunStore(info.run_dir)
        for record in store.records().values():
            wanted[record["sha256"]] = store.root / record["image"]
    wanted = {sha: path for sha, path in wanted.items() if path.is_file()}
    thumbs = ensure_thumbnails(wanted, out / "thumbs")

    def page(path: Path, title: str, body: str) -> None:
        _page(path, title, body, random)
    sections = []
    for suite in sorted(runs["suite"].unique()):
        mine, suite_runs, warnings, against, stats = suite_summary(df, runs, suite, settings, versus)
        table, plan, numeric = leaderboard_html(df, runs, suite, paper_dir, warnings, stats, settings)
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
            + arena_html(find_results(out.parent, suite_runs["run_dir"]))
            + ceiling_html(mine, suite_runs, suite, settings)
            + f'<h3>Gallery</h3>{gallery(df, runs, suite, plan, out, images, thumbs, page)}</section>')
    body = (f'<h1>Benchmark report</h1><p class="muted">Written by <code>python -m bench report --html</code> on '
            f'{escape(time.strftime("%Y-%m-%d %H:%M"))} from {len(runs)} run(s). Protocols and sources: '
            f'docs/protocols.md in the repository.</p>{"".join(sections)}'
            + (humans.html() if humans is not None else ""))        # bench.report.humans
    path = out / "index.html"
    page(path, "bench report", body)
    return path
