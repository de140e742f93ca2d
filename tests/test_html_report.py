"""The HTML report: a static folder that opens from file:// with no network, checked in a real
headless browser (Chromium) where one is installed: no script errors or failed resources, every
image renders, sorting and filters work, and a screenshot is saved."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

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


def test_page_is_self_contained_and_every_image_resolves(report):
    page, _ = report
    text = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', text), "the page must not load anything from the network"
    assert "<script src" not in text and "<link" not in text                   # style and script inline
    sources = image_sources(page)
    # 3 reference images x 3 subjects, (2 sd seeds + 1 ezigen seed) x 12 cells, 1 scatter plot
    assert len(sources) == 9 + 3 * 12 + 1
    for src in sources:
        assert not Path(src).is_absolute() and (page.parent / src).is_file(), src
    assert "RANDOM WEIGHTS" in text and text.count('class="stamp"') == 2 * 12   # banner + each run column
    assert 'class="f-subject"' in text and 'class="f-category"' in text and 'class="f-run"' in text
    assert "docs/protocols.md" in text and "shared/" not in text


def test_copied_images_make_the_folder_movable(report, tmp_path):
    _, dirs = report
    page = write_html(load_scores(dirs), load_runs(dirs), tmp_path / "html", copy_images=True)
    moved = tmp_path / "moved"
    shutil.move(str(page.parent), moved)
    sources = image_sources(moved / "index.html")
    assert sources and all(".." not in s and (moved / s).is_file() for s in sources)


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
def test_page_loads_without_errors_and_every_image_renders(report, tmp_path):
    page, _ = report
    status, _ = page_state(page, tmp_path / "profile", "?eager=1")
    assert status["ready"] and status["errors"] == []
    assert status["images"]["broken"] == []
    assert status["images"]["loaded"] == status["images"]["total"] == len(image_sources(page))


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
    sections = re.findall(r'<section class="subject( hidden)?" data-subject="([^"]+)"', dom)
    assert {name for hidden, name in sections if not hidden} == {"dog"} and len(sections) == 3
    _, dom = page_state(page, profile, "?category=object&seed=1")
    sections = re.findall(r'<section class="subject( hidden)?" data-subject="([^"]+)"', dom)
    assert {name for hidden, name in sections if not hidden} == {"backpack", "vase"}
    figures = re.findall(r'<figure data-seed="(\d)"( class="hidden")?', dom)
    assert figures and all((seed == "1") == (not hidden) for seed, hidden in figures)


@needs_browser
def test_screenshot_shows_the_report(report, tmp_path):
    page, _ = report
    shot = tmp_path / "gallery.png"
    chromium(page.as_uri() + "?eager=1", tmp_path / "profile", "--hide-scrollbars", "--window-size=1400,2400",
             f"--screenshot={shot}")
    with Image.open(shot) as image:
        assert image.size == (1400, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 1000                      # text, plots and pictures
        red = sum(n for n, (r, g, b) in colours if r > 150 and g < 40 and b < 40)
        assert red > 1000                                                       # the random-weights banner
