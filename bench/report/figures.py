"""Figures: the scatter plot of two metrics (matplotlib) and the PIL sample grid.

The scatter places every row that has both values (ours with mean ± std error bars, the paper's
as grey squares) and labels the points so that no two labels overlap; the sample grid shows per
chosen (subject, prompt) cell the reference image, then each run's image with the prompt under it.
A run with random weights gets the stamp given by the caller on both.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import BenchError
from bench.report.load import run_cells
from bench.store import RunStore

# Scatter axes per suite (x, y): text alignment (or background preservation) vs identity.
FALLBACK_SCATTER = {"dreambench": ("CLIP-T", "DINO"), "dreamedit": ("DINO-back", "DINO-sub"),
                    "fastcomposer": ("Prompt", "ID")}


def suite_scatter_axes(suite: str) -> tuple[str, str]:
    try:
        from bench.registry import SUITES
        axes = getattr(SUITES.get(suite).load(), "scatter_axes", None)
        if axes:
            return tuple(axes)
    except BenchError:
        pass
    return FALLBACK_SCATTER.get(suite, ("CLIP-T", "DINO"))



# ---- plots ----------------------------------------------------------------------------------
# Label positions tried around a point, in points: near ones first, then farther out.
_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4.5, 6.5)
            for dx, dy in ((5, 4), (5, -9), (-5, 4), (-5, -9), (0, 9), (0, -14), (9, -2), (-9, -2))]


def place_labels(ax, points: list[tuple[float, float, str, dict]]) -> list[tuple[tuple, tuple]]:
    """Annotate each (x, y, text, style) so that no two labels overlap and no label covers a
    marker: each label takes the first offset (near ones first) whose box is free, else the
    least covered one, and never nearer another point than its own when it can help it; a label
    moved away from its point gets a thin leader line. Returns per label its text box
    (x0, y0, x1, y1) and its point (x, y), in pixels, and whether it has a leader line."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    markers = []
    for x, y, _, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append((px - 4, py - 4, px + 4, py + 4))
    taken: list[tuple[float, float, float, float]] = []
    leaders: list[bool] = []

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    def distance(rect, point) -> float:
        dx = max(rect[0] - point[0], 0, point[0] - rect[2])
        dy = max(rect[1] - point[1], 0, point[1] - rect[3])
        return math.hypot(dx, dy)

    centres = [((m[0] + m[2]) / 2, (m[1] + m[3]) / 2) for m in markers]
    for index, (x, y, text, style) in enumerate(points):
        best = None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, **style)
            box = ann.get_window_extent(renderer)
            rect = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            # in order of badness: outside the axes, covering a label or marker, nearer another point
            cost = 100 * (sum(overlap(rect, t) for t in taken) + sum(overlap(rect, m) for m in markers))
            own = distance(rect, centres[index])
            cost += 50 * sum(1 for j, c in enumerate(centres) if j != index and distance(rect, c) < own)
            inside = ax.get_window_extent(renderer)
            cost += 0 if (rect[0] >= inside.x0 and rect[2] <= inside.x1 and rect[1] >= inside.y0
                          and rect[3] <= inside.y1) else 1e9
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, rect, (dx, dy))
            else:
                ann.remove()
            if cost == 0:
                break
        _, ann, rect, (dx, dy) = best
        own = distance(rect, centres[index])
        ambiguous = any(j != index and distance(rect, c) < own for j, c in enumerate(centres))
        leader = abs(dx) > 5 or abs(dy) > 14 or ambiguous     # a line says which point a label names
        if leader:
            ann.remove()
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}, **style)
        taken.append(rect)
        leaders.append(leader)
    return list(zip(taken, centres, leaders))


def scatter_plot(numeric: list[dict], x: str, y: str, path: Path, title: str, stamp: str | None = None):
    """CLIP-T vs DINO style scatter of every row that has both values; False if none has.
    Returns the labels' boxes and points in pixels (place_labels; a list, truthy) when it wrote
    the plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in numeric if x in r and y in r and not math.isnan(r[x][0]) and not math.isnan(r[y][0])]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    xs = [r[x][0] for r in points]
    ys = [r[y][0] for r in points]
    pad_x = max(0.01, (max(xs) - min(xs)) * 0.25)
    pad_y = max(0.01, (max(ys) - min(ys)) * 0.2)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    labels = []
    for r in points:
        (xm, xs_), (ym, ys_) = r[x], r[y]
        if r["paper"]:
            ax.scatter([xm], [ym], marker="s", color="0.55", s=28, zorder=2)
        else:
            ax.errorbar([xm], [ym], xerr=None if math.isnan(xs_) else [xs_], yerr=None if math.isnan(ys_) else [ys_],
                        fmt="o", color="tab:blue", ms=6, capsize=3, zorder=3)
        labels.append((xm, ym, r["label"] + (" (paper)" if r["paper"] else ""),
                       {"fontsize": 7, "color": "0.35" if r["paper"] else "tab:blue"}))
    from matplotlib.lines import Line2D
    ax.legend(handles=[Line2D([], [], marker="o", color="tab:blue", ls="", label="ours: mean ± std over seeds"),
                       Line2D([], [], marker="s", color="0.55", ls="", label="paper (docs/protocols.md section 5)")],
              fontsize=7, loc="lower left")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title + (f"\n{stamp}" if stamp else ""), fontsize=10, color="black")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    boxes = place_labels(ax, labels)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return boxes


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                       # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int, max_lines: int = 3) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".") + " …"
    return lines


def grid_cells(runs, per_suite: int = 6) -> list[str]:
    """Up to ``per_suite`` cells to show, spread over subjects (round robin, in suite order), taken
    among the cells that every run has an image for where possible."""
    recorded = []
    for info in runs.itertuples(index=False):
        recorded.append({k.rsplit("/", 2)[0] for k in RunStore(info.run_dir).records()})
    if not recorded or not any(recorded):
        return []
    common = set.intersection(*recorded)
    pool = sorted(common) if common else sorted(set().union(*recorded))
    by_subject: dict[str, list[str]] = {}
    for cell in pool:
        by_subject.setdefault(cell.split("/")[1], []).append(cell)
    chosen = []
    while len(chosen) < per_suite and any(by_subject.values()):
        for k, cells in enumerate(by_subject.values()):     # subjects show different prompts
            if cells and len(chosen) < per_suite:
                chosen.append(cells.pop((3 * k) % len(cells)))
    return chosen


def first_image(store: RunStore, records: dict, cell: str) -> Path | None:
    """The image of a cell to show: lowest seed, image index 0."""
    keys = sorted((k for k in records if k.rsplit("/", 2)[0] == cell),
                  key=lambda k: (int(k.rsplit("/", 2)[1][1:]), int(k.rsplit("/", 1)[1][1:])))
    for key in keys:
        path = store.root / records[key]["image"]
        if path.exists():
            return path
    return None


def sample_grid(runs, path: Path, per_run: int = 6, thumb: int = 128, stamp: str | None = None) -> list:
    """One row per chosen (subject, prompt) cell: the subject's reference image first, then each
    run's image of that cell (lowest seed, first image), with the prompt under every image and
    the runs named above their columns. Returns the layout, one (cell, reference image or None,
    reference box, [(run, image or None, box)]) per row (boxes: left, top, right, bottom);
    an empty list when no run has an image."""
    from PIL import Image, ImageDraw, ImageOps

    from bench.images import load_rgb

    cells = grid_cells(runs, per_run)
    if not cells:
        return []
    infos = list(runs.itertuples(index=False))
    stores = [RunStore(i.run_dir) for i in infos]
    records = [s.records() for s in stores]
    samples = {}
    for info in infos:
        for cell, sample in run_cells(RunStore(info.run_dir).read_run(), Path(info.run_dir)).items():
            samples.setdefault(cell, sample)
    font, small = _font(13), _font(11)
    gap, text_h = 8, 44
    col_w = thumb + gap
    width = gap + col_w * (1 + len(infos))
    stamp_lines = _wrap(ImageDraw.Draw(Image.new("RGB", (1, 1))), stamp, font, width - 2 * gap, 4) if stamp else []
    head_h = 36 + 16 * len(stamp_lines)
    height = head_h + len(cells) * (thumb + text_h + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(stamp_lines):
        draw.text((gap, 4 + 16 * n), line, fill=(180, 0, 0), font=font)
    top0 = 4 + 16 * len(stamp_lines)
    draw.text((gap, top0), "reference", fill="black", font=font)
    for j, info in enumerate(infos):
        name = info.label if info.label == info.run else f"{info.label} ({info.run})"
        for n, line in enumerate(_wrap(draw, name, small, thumb, 2)):
            draw.text((gap + col_w * (1 + j), top0 + n * 13), line, fill="black", font=small)

    def tile(image_path):
        try:
            im = load_rgb(image_path)
        except BenchError:
            return Image.new("RGB", (thumb, thumb), (230, 230, 230))
        im = ImageOps.contain(im, (thumb, thumb), Image.BICUBIC)     # small images are scaled up too
        out = Image.new("RGB", (thumb, thumb), "white")
        out.paste(im, ((thumb - im.width) // 2, (thumb - im.height) // 2))
        return out

    layout = []
    for i, cell in enumerate(cells):
        top = head_h + i * (thumb + text_h + gap)
        sample = samples.get(cell)
        subject = cell.split("/")[1]
        refs = (sample.reference_images or sample.subject_images) if sample else ()
        ref_box = (gap, top, gap + thumb, top + thumb)
        row = []
        if refs:
            canvas.paste(tile(refs[0]), (gap, top))
        else:
            draw.rectangle((gap, top, gap + thumb, top + thumb), outline=(200, 200, 200))
        for n, line in enumerate(_wrap(draw, f"{subject}" + (f" ({sample.class_noun})" if sample else ""),
                                       small, thumb, 3)):
            draw.text((gap, top + thumb + 2 + n * 13), line, fill="black", font=small)
        prompt = sample.prompt if sample else f"prompt {cell.rsplit('/', 1)[1]}"
        for j, (store, recs) in enumerate(zip(stores, records)):
            left = gap + col_w * (1 + j)
            image = first_image(store, recs, cell)
            row.append((infos[j].run, image, (left, top, left + thumb, top + thumb)))
            if image is not None:
                canvas.paste(tile(image), (left, top))
            else:
                draw.rectangle((left, top, left + thumb, top + thumb), outline=(200, 200, 200))
                draw.text((left + 6, top + thumb // 2), "no image", fill="gray", font=small)
            for n, line in enumerate(_wrap(draw, prompt, small, thumb, 3)):
                draw.text((left, top + thumb + 2 + n * 13), line, fill=(60, 60, 60), font=small)
        layout.append((cell, refs[0] if refs else None, ref_box, row))
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return layout

