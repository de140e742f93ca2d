"""The HTML report: a static folder of pages (an index with the leaderboards and one page per
subject) that opens from file:// with no network, checked in a real headless browser (Chromium)
where one is installed: no script errors or failed resources on any page, every thumbnail
renders, sorting works, filters work and travel between the pages, and a screenshot is saved."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from bench.report.html import write_html
from bench.report import load_runs, load_scores
from bench.scoring import score_run
from test_scoring import make_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    sd = make_run(root / "runs" / "sd-smoke", method="sd", seeds=(0, 1))
    ez = make_run(root / "runs" / "ezigen-smoke", method="ezigen", seeds=(0,), weights_status="untrained adapter")
    for store in (sd, ez):
        score_run(store.root, progress=False)
    dirs = [sd.root, ez.root]
    page = write_html(load_scores(dirs), load_runs(dirs), root / "out" / "html")
    return page, dirs


def image_sources(page: Path) -> list[str]:
    return re.findall(r'<img[^>]* src="([^"]*)"', page.read_text(encoding="utf-8"))


def links(page: Path) -> list[str]:
    return re.findall(r'<a[^>]* href="([^"]*)"', page.read_text(encoding="utf-8"))


def all_pages(index: Path) -> list[Path]:
    return [index, *sorted((index.parent / "gallery").rglob("*.html"))]


def test_pages_are_self_contained_and_every_image_and_link_resolves(report):
    index, _ = report
    pages = all_pages(index)
    assert [p.relative_to(index.parent).as_posix() for p in pages[1:]] == [
        "gallery/dreambench/backpack.html", "gallery/dreambench/dog.html", "gallery/dreambench/vase.html"]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'(src|href)="(https?:)?//', text), "the page must not load anything from the network"
        assert "<script src" not in text and "<link" not in text               # style and script inline
        assert "RANDOM WEIGHTS" in text
        for target in image_sources(page) + [h.split("#")[0] for h in links(page)]:
            assert not Path(target).is_absolute() and (page.parent / unquote(target)).is_file(), (page, target)
    galleries = pages[1:]
    thumbs = [s for p in galleries for s in image_sources(p) if "/thumbs/" in s]
    # per subject page: 3 reference images, then (2 sd seeds + 1 ezigen seed) x 4 prompts thumbnails
    assert len(thumbs) == 3 * 12 and sum(len(image_sources(p)) for p in galleries) == 9 + 36
    assert all(Image.open(p.parent / unquote(t)).size[0] <= 256 for p in galleries for t in image_sources(p)
               if "/thumbs/" in t)
    full = [h for p in galleries for h in links(p) if "/images/" in h]
    assert len(full) == 36                                                     # each thumbnail links to its image
    assert sum(p.read_text(encoding="utf-8").count('class="stamp"') for p in galleries) == 2 * 12
    text = index.read_text(encoding="utf-8")
    assert 'class="f-subject"' in text and 'class="f-category"' in text and 'class="f-run"' in text
    assert text.count('class="subject-row"') == 3 and len(image_sources(index)) == 3 * 2 + 1
    assert "docs/protocols.md" in text and "shared/" not in text


def test_thumbnails_are_made_once(report, tmp_path, monkeypatch):
    _, dirs = report
    import bench.report.thumbs as thumbs

    made = []
    original = thumbs._make
    monkeypatch.setattr(thumbs, "_make", lambda jobs: made.extend(jobs) or original(jobs))
    for _ in range(2):
        write_html(load_scores(dirs), load_runs(dirs), tmp_path / "html")
    assert len(made) == 36                                                     # every image, the first time only


def test_copied_images_make_the_folder_movable(report, tmp_path):
    _, dirs = report
    page = write_html(load_scores(dirs), load_runs(dirs), tmp_path / "html", copy_images=True)
    moved = tmp_path / "moved"
    shutil.move(str(page.parent), moved)
    for page in all_pages(moved / "index.html"):
        targets = image_sources(page) + [h.split("#")[0] for h in links(page)]
        assert targets and all((page.parent / unquote(t)).resolve().is_relative_to(moved.resolve())
                               and (page.parent / unquote(t)).is_file() for t in targets), page


# ---- in a real browser ----------------------------------------------------------------------
def find_browser() -> str | None:
    """The first installed Chromium that starts (a snap shim without snapd does not)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            try:
                if subprocess.run([path, "--version"], capture_output=True, timeout=30).returncode == 0:
                    return path
            except (OSError, subprocess.SubprocessError):
                pass
    return None


BROWSER = find_browser()


def browser() -> str | None:
    return BROWSER


needs_browser = pytest.mark.skipif(browser() is None, reason="no Chromium installed (apt-get install chromium)")


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={profile}", "--allow-file-access-from-files",
               "--virtual-time-budget=15000", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def page_state(page: Path, profile: Path, query: str = "") -> tuple[dict, str]:
    """(the page's status JSON, the DOM after its script ran) for page?query."""
    result = chromium(page.as_uri() + query, profile, "--dump-dom")
    match = re.search(r'<pre id="bench-status"[^>]*>(.*?)</pre>', result.stdout, re.S)
    assert match, f"no status in the dumped DOM; browser said: {result.stderr[-2000:]}"
    import html
    return json.loads(html.unescape(match.group(1))), result.stdout


def leaderboard_column(dom: str, title: str) -> list[float]:
    """The numeric sort values of one leaderboard column, in the order the DOM shows the rows."""
    table = re.search(r'<table class="leaderboard".*?</table>', dom, re.S).group(0)
    heads = re.findall(r'<th data-col="([^"]*)"', table)
    index = heads.index(title)
    values = []
    for row in re.findall(r"<tr class=\"(?:ours|paper)[^\"]*\">(.*?)</tr>", table, re.S):
        cell = re.findall(r"<td([^>]*)>", row)[index]
        value = re.search(r'data-value="([^"]*)"', cell).group(1)
        values.append(float(value) if value else math.nan)
    return values


@needs_browser
def test_every_page_loads_without_errors_and_every_image_renders(report, tmp_path):
    index, _ = report
    for page in all_pages(index):
        status, _ = page_state(page, tmp_path / "profile", "?eager=1")
        assert status["ready"] and status["errors"] == [], page
        assert status["images"]["broken"] == []
        assert status["images"]["loaded"] == status["images"]["total"] == len(image_sources(page))
        assert status["dom_ready_ms"] is not None          # measured by the page (benchmarks/scale.py uses it)


@needs_browser
def test_status_catches_script_errors_and_broken_images(report, tmp_path):
    """The check above can fail: a page with a script error and a missing image reports both."""
    page, _ = report
    broken = page.parent / "broken.html"
    text = page.read_text(encoding="utf-8")
    text = text.replace('<pre id="bench-status"', '<img src="missing.png" alt="x"><script>notDefined();</script>'
                        '<pre id="bench-status"', 1)
    broken.write_text(text, encoding="utf-8")
    status, _ = page_state(broken, tmp_path / "profile", "?eager=1")
    assert any("notDefined" in e for e in status["errors"])
    assert any("missing.png" in e for e in status["errors"]) and status["images"]["broken"] == ["missing.png"]


@needs_browser
def test_sorting_and_filters_work_in_the_browser(report, tmp_path):
    page, _ = report
    profile = tmp_path / "profile"
    before = leaderboard_column(page.read_text(encoding="utf-8"), "DINO")
    for direction in ("asc", "desc"):
        status, dom = page_state(page, profile, f"?sort=DINO&dir={direction}")
        assert status["errors"] == [] and status["sort"]["column"] == "DINO" and status["sort"]["dir"] == direction
        shown = leaderboard_column(dom, "DINO")
        numbers = [v for v in shown if not math.isnan(v)]
        assert numbers == sorted(numbers, reverse=direction == "desc")
        assert all(math.isnan(v) for v in shown[len(numbers):])                # dashes last
        assert sorted(numbers) == sorted(v for v in before if not math.isnan(v))
    assert leaderboard_column(dom, "DINO") != before
    _, dom = page_state(page, profile, "?subject=dog")
    rows = re.findall(r'<tr class="subject-row( hidden)?" data-subject="([^"]+)"', dom)
    assert {name for hidden, name in rows if not hidden} == {"dog"} and len(rows) == 3


@needs_browser
def test_filters_travel_between_the_pages(report, tmp_path):
    """The index's filters hide subjects and are carried by every link to a subject page; on a
    subject page they hide seeds and runs, and its previous/next links carry them on."""
    index, _ = report
    profile = tmp_path / "profile"
    status, dom = page_state(index, profile, "?category=object&seed=1&hide=ezigen-smoke")
    rows = re.findall(r'<tr class="subject-row( hidden)?" data-subject="([^"]+)"', dom)
    assert {name for hidden, name in rows if not hidden} == {"backpack", "vase"}
    pages = [link for link in status["links"] if link.startswith("gallery/")]
    assert len(pages) == 3 and all("seed=1" in link and "hide=ezigen-smoke" in link and "category=object" in link
                                   for link in pages)
    target, query = pages[0].split("?")
    status, dom = page_state(index.parent / target, profile, "?" + query)
    assert status["errors"] == []
    figures = re.findall(r'<figure data-seed="(\d)"( class="hidden")?', dom)
    assert figures and all((seed == "1") == (not hidden) for seed, hidden in figures)
    columns = re.findall(r'<div class="run-col( hidden)?" data-run="([^"]+)"', dom)
    assert columns and all(bool(hidden) == (run == "ezigen-smoke") for hidden, run in columns)
    nav = [link for link in status["links"] if not link.startswith("#")]
    assert any("next" in dom for _ in nav) and all("seed=1" in link for link in nav)
    assert any(link.split("?")[0].endswith("dog.html") for link in nav)       # the next subject


@needs_browser
def test_screenshot_shows_the_report(report, tmp_path):
    page, _ = report
    shot = tmp_path / "gallery.png"
    chromium(page.as_uri() + "?eager=1", tmp_path / "profile", "--hide-scrollbars", "--window-size=1400,4000",
             f"--screenshot={shot}")
    with Image.open(shot) as image:
        assert image.size == (1400, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 1000                      # text, plots and pictures
        red = sum(n for n, (r, g, b) in colours if r > 150 and g < 40 and b < 40)
        assert red > 1000                                                       # the random-weights banner
