"""The full protocol at full size: how the harness's own costs grow with the number of images.

Not a test. In a temporary folder it builds DreamBench runs from synthetic images with the real
layout (benchmarks/synthetic_run.py: 30 subjects x 25 prompts x 4 images x 6 seeds = 18,000
images a run, written through the store's writer), then times, each as the user runs it:

1. ``bench run --dry-run`` and the resume check (``bench run`` again on the finished run: every
   image recorded, no model loads) on a run of ``--records`` records;
2. ``bench score`` with the tiny metric models on ``--images`` images (the harness's overhead:
   decode, preprocess, cache), and the score cache lookup (``bench score`` again, nothing new);
   then the marginal cost per image of ``bench score --images`` (``--margin SMALL LARGE`` external
   64 px images, benchmarks/score_margin.py): the main process's CPU time per image beside the
   decoding workers' and the forwards', and the ratio to a plain single-process decode + resize +
   normalise loop over the same files, measured in the same run;
3. ``bench score`` with the protocol's real architectures (open_clip ViT-B/32 with OpenAI's
   layout, timm DINO ViT-S/16) and random weights, planted in a temporary Hugging Face cache, on
   ``--real-images`` images: the share of wall time spent inside the metric forwards;
4. ``bench report --html`` over two runs, and the first load of its pages in headless Chromium
   (when installed).

It prints ratios that carry across machines (time in forwards / wall, seconds per 1,000 images),
says at what size it ran, and extrapolates to 18,000 images a run, labelled as an extrapolation.

    python benchmarks/scale.py                          # make scale: a size this machine affords
    python benchmarks/scale.py --images 18000 --records 18000 --real-images 200
    python benchmarks/scale.py --only-margin            # only the marginal cost of bench score --images
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import score_margin  # noqa: E402
from synthetic_run import (FULL_SIZE, PROTOCOL_SEEDS, plant_random_backbones, write_run,  # noqa: E402
                           write_suite)

PER_SUBJECT = FULL_SIZE // 30          # 25 prompts x 4 images x 6 seeds

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Captured(Exception):
    pass


def run_identity(data_root: Path, method: str, out: Path) -> dict:
    """The identity `bench run --method METHOD --preset tiny --suite dreambench` records, so that
    a synthetic run resumes like a real one (captured from the runner itself, before it loads anything)."""
    from bench.cli import build_parser
    from bench.store import RunStore

    argv = ["run", "--method", method, "--preset", "tiny", "--suite", "dreambench", "--data-root", str(data_root),
            "--out", str(out), "--no-score"]
    parser, modules = build_parser(argv)
    captured = {}
    original = RunStore.check_identity

    def capture(self, identity):
        captured.update(identity)
        raise _Captured
    RunStore.check_identity = capture
    try:
        modules["run"].run(parser.parse_args(argv))
    except _Captured:
        pass
    finally:
        RunStore.check_identity = original
    return captured


#: runs ``python -m bench`` and prints its own peak resident memory at exit
#: (VmHWM of /proc/self/status: ru_maxrss would carry this benchmark's own peak across fork and exec)
_MEASURED = ("import atexit, runpy, sys\n"
             "def peak():\n"
             "    try:\n"
             "        for line in open('/proc/self/status'):\n"
             "            if line.startswith('VmHWM:'):\n"
             "                print('PEAK-RSS-KB', line.split()[1], file=sys.stderr)\n"
             "    except OSError:\n"
             "        pass\n"
             "atexit.register(peak)\n"
             "sys.argv = ['bench'] + sys.argv[1:]\n"
             "runpy.run_module('bench', run_name='__main__')\n")


def bench_cli(args: list[str], env: dict | None = None) -> tuple[float, str, float]:
    """(wall seconds, stderr, peak resident MiB of the command's own process) of ``python -m bench
    ARGS`` in a fresh process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _MEASURED, *args], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    peak = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK-RSS-KB")]
    return wall, result.stderr, (int(peak[-1]) / 1024 if peak else float("nan"))


def in_process(args: list[str]) -> float:
    """Seconds of ``bench ARGS`` run in this process, the second of two calls (imports paid by the
    first; the in-process caches of parsed records and checked images emptied before each)."""
    import bench.images
    import bench.store
    from bench.cli import main

    for _ in range(2):
        bench.store._RECORDS.clear()
        bench.images._CHECKED.clear()
        start = time.perf_counter()
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            code = main(args)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"bench {' '.join(args)} exited {code}")
    return seconds


class ForwardClock:
    """Wall seconds inside outermost nn.Module forwards (nested modules are not counted twice)."""

    def __enter__(self):
        import torch

        self.seconds, self._depth, self._start = 0.0, 0, 0.0
        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
                         torch.nn.modules.module.register_module_forward_hook(self._post)]
        return self

    def _pre(self, *_):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _post(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def profile_real(folder: Path, data_root: Path, n_images: int, size: int, workers: int | None) -> dict:
    """bench score with the real metric architectures (random weights) in this process: wall time,
    time inside the forwards, and the top functions by own time."""
    import cProfile
    import pstats

    plant_random_backbones(Path(os.environ["HF_HUB_CACHE"]))
    from bench.store import RunStore

    if (folder / "real" / "run.json").exists():
        store = RunStore(folder / "real")
        store.scores_path.unlink(missing_ok=True)
    else:
        store = write_run(folder / "real", data_root, n_images, size, progress=False)
    store.update_run(metric_preset=None)
    from bench.scoring import score_run

    # the models load (and build their random initialisation) once per command: timed apart
    from bench.metrics.clip import ClipMetric
    from bench.metrics.dino import DinoMetric
    start = time.perf_counter()
    ClipMetric().backend
    DinoMetric().model
    load_s = time.perf_counter() - start
    profiler = cProfile.Profile()
    with ForwardClock() as clock, redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        profiler.enable()
        score_run(store.root, progress=False, workers=workers)
        profiler.disable()
        wall = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-9:]
    return {"images": n_images, "wall_s": wall, "forward_s": clock.seconds, "load_s": load_s, "top": top}


def browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def page_load(url: str, profile: Path) -> tuple[float, float | None]:
    """(seconds for headless Chromium to start, load ``url`` and dump its DOM; seconds from the
    navigation to the page's DOMContentLoaded, as the page itself measured it, or None)."""
    import html
    import json
    import re

    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", url]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    match = re.search(r'<pre id="bench-status"[^>]*>(.*?)</pre>', result.stdout, re.S)
    ready = json.loads(html.unescape(match.group(1))).get("dom_ready_ms") if match else None
    return wall, (ready / 1000 if ready is not None else None)


def margin(say, folder: Path, args) -> None:
    """The marginal cost per image of `bench score --images` against a plain decode loop
    (benchmarks/score_margin.py), with the machine's load beside it."""
    say()
    result = score_margin.measure(folder, *args.margin, workers=args.workers, repeats=args.margin_repeats)
    for line in score_margin.lines(result):
        say(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="images a run for scoring and the report "
                        f"(the protocol: {FULL_SIZE})")
    parser.add_argument("--records", type=int, default=FULL_SIZE, help="records of the run for dry-run/resume/"
                        "cache, a multiple of 600 (64 px images, cheap to write)")
    parser.add_argument("--real-images", type=int, default=64, help="images scored with the real architectures")
    parser.add_argument("--size", type=int, default=512, help="generated image size in pixels")
    parser.add_argument("--workers", type=int, default=None, help="bench score --workers (default: its own)")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--margin", type=int, nargs=2, default=(300, 3000), metavar=("SMALL", "LARGE"),
                        help="external 64 px images for the marginal cost of bench score --images (default 300 3000)")
    parser.add_argument("--margin-repeats", type=int, default=3, help="repeats of that measurement (default 3)")
    parser.add_argument("--only-margin", action="store_true", help="measure only the marginal cost of bench score "
                        "--images (nothing else is built)")
    args = parser.parse_args(argv)
    if not 0 < args.margin[0] < args.margin[1]:
        parser.error("--margin SMALL LARGE: 0 < SMALL < LARGE")
    if args.records < PER_SUBJECT or args.records % PER_SUBJECT and args.records < FULL_SIZE:
        parser.error(f"--records must be a multiple of {PER_SUBJECT} (one subject's images), at most {FULL_SIZE}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    # the real architectures' random weights are planted here (read when huggingface_hub is imported)
    os.environ["HF_HUB_CACHE"] = str(folder / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"# benchmarks/scale.py on {cores} CPU core(s), load average {load:.1f} at the start, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    say(f"# sizes: dry-run/resume/cache on {args.records} records; tiny scoring and report on {args.images} "
        f"images a run at {args.size} px; real architectures on {args.real_images} images; marginal cost of "
        f"bench score --images between {args.margin[0]} and {args.margin[1]} external 64 px images")
    say("# absolute seconds depend on the machine and its load; the ratios carry")
    if args.only_margin:
        margin(say, folder, args)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        return 0
    data_root = folder / "suite"
    if not (data_root / "dataset").is_dir():
        write_suite(data_root)

    # 1. dry-run, resume check, cache lookup on a run of --records records
    records_run = folder / "records-run"
    if not (records_run / "run.json").exists():
        identity = run_identity(data_root, "sd", records_run)
        write_run(records_run, data_root, args.records, 64, progress=False, identity=identity,
                  seeds=PROTOCOL_SEEDS)
    common = ["--method", "sd", "--preset", "tiny", "--suite", "dreambench", "--data-root", str(data_root),
              "--out", str(records_run)]
    if args.records < FULL_SIZE:           # the subjects the records cover in full: nothing left to generate
        from bench.suites import load_suite

        subjects = sorted({s.subject for s in load_suite("dreambench", data_root).samples()})
        covered = subjects[:args.records // PER_SUBJECT]
        common += ["--subjects", ",".join(covered)]
    dry_wall, _, _ = bench_cli(["run", *common, "--dry-run"])
    dry_in = in_process(["run", *common, "--dry-run"])
    resume_wall, resume_err, _ = bench_cli(["run", *common, "--no-score"])
    resume_in = in_process(["run", *common, "--no-score"])
    say()
    say(f"## {args.records} records")
    say(f"bench run --dry-run        {dry_wall:6.2f} s wall ({dry_in:.2f} s after imports)")
    say(f"resume check (bench run)   {resume_wall:6.2f} s wall ({resume_in:.2f} s after imports): "
        f"{resume_err.strip().splitlines()[0] if resume_err.strip() else ''}")
    first = "scored before this run (--keep)"
    if not (records_run / "scores.parquet").exists():
        from bench.store import RunStore
        from synthetic_run import write_synthetic_scores

        write_synthetic_scores(RunStore(records_run))
        first = "a synthetic score table with every row cached: scoring 18,000 images first would take minutes"
    cache_wall, _, _ = bench_cli(["score", str(records_run), "--no-progress"])
    cache_in = in_process(["score", str(records_run), "--no-progress"])
    say(f"bench score, all cached    {cache_wall:6.2f} s wall ({cache_in:.2f} s after imports; {first})")

    # 2. scoring with the tiny models at --images
    runs = []
    for method in ("sd", "ezigen"):
        path = folder / f"{method}-run"
        if not (path / "run.json").exists():
            start = time.perf_counter()
            write_run(path, data_root, args.images, args.size, method=method, progress=False)
            print(f"(wrote {args.images} images for {method} in {time.perf_counter() - start:.0f} s)", file=sys.stderr)
        runs.append(path)
    (runs[0] / "scores.parquet").unlink(missing_ok=True)
    workers = ["--workers", str(args.workers)] if args.workers is not None else []
    wall, err, _ = bench_cli(["score", str(runs[0]), "--no-progress", *workers])
    pipeline_line = next((line for line in err.splitlines() if line.startswith("pipeline:")), "")
    say()
    say(f"## bench score, tiny metric models, {args.images} images at {args.size} px")
    say(f"wall {wall:.1f} s = {args.images / wall:.1f} images/s; {pipeline_line}")
    say(f"extrapolated to {FULL_SIZE} images (linear): {wall / args.images * FULL_SIZE / 60:.1f} min")
    bench_cli(["score", str(runs[1]), "--no-progress", *workers])
    margin(say, folder, args)

    # 3. the real architectures, random weights
    if args.real_images:
        real = profile_real(folder, data_root, args.real_images, args.size, args.workers)
        say()
        say(f"## bench score, real architectures (CLIP ViT-B/32 + DINO ViT-S/16, random weights), "
            f"{real['images']} images at {args.size} px, after the models loaded ({real['load_s']:.1f} s)")
        say(f"wall {real['wall_s']:.1f} s = {real['images'] / real['wall_s']:.2f} images/s; "
            f"inside the metric forwards {real['forward_s']:.1f} s = "
            f"{100 * real['forward_s'] / real['wall_s']:.0f}% of the wall time (goal >= 80%)")
        say(f"extrapolated to {FULL_SIZE} images (linear, this CPU): "
            f"{FULL_SIZE / (real['images'] / real['wall_s']) / 60:.0f} min")
        say("top functions by own time:")
        for line in real["top"]:
            say("    " + line.rstrip())

    # 4. the report and its pages
    if not args.skip_report:
        report = folder / "report"
        shutil.rmtree(report, ignore_errors=True)
        first, _, _ = bench_cli(["report", *map(str, runs), "--out", str(report), "--html"])
        again, _, rss = bench_cli(["report", *map(str, runs), "--out", str(report), "--html"])
        total = args.images * len(runs)
        say()
        say(f"## bench report --html over {len(runs)} runs x {args.images} images")
        say(f"first (makes thumbnails) {first:.1f} s; again {again:.1f} s = {again / total * 1000:.2f} s per 1,000 "
            f"images; peak resident {rss:.0f} MiB")
        small_report = again
        # at full size: the records run and a copy of it under another method name (same image bytes,
        # so the copy's scores are the original's), 2 x --records images
        twin = folder / "records-run-b"
        if not (twin / "run.json").exists() and (records_run / "scores.parquet").exists():
            shutil.copytree(records_run, twin, ignore=shutil.ignore_patterns("*.lock", ".run.lock"))
            from bench.store import RunStore
            RunStore(twin).update_run(method={"name": "synthetic-b"})
        if (twin / "scores.parquet").exists():
            full = folder / "report-full"
            shutil.rmtree(full, ignore_errors=True)
            pair = [str(records_run), str(twin)]
            first, _, _ = bench_cli(["report", *pair, "--out", str(full), "--html"])
            again, _, rss = bench_cli(["report", *pair, "--out", str(full), "--html"])
            say(f"over 2 runs x {args.records} records (64 px images): first {first:.1f} s; again {again:.1f} s "
                f"(goal <= 30 s at 2 x 18,000); peak resident {rss:.0f} MiB (goal <= 2 GiB)")
            if 2 * args.records >= 4 * total:          # sizes far enough apart for a slope
                marginal = (again - small_report) / (2 * args.records - total) * 1000
                say(f"marginal cost {marginal:.2f} s per 1,000 images (the rest is fixed: imports, plots, "
                    "suite loading)")
            pages = sorted((full / "html" / "gallery").rglob("*.html"))
            say(f"pages: index {(full / 'html' / 'index.html').stat().st_size / 1024:.0f} KiB, {len(pages)} subject "
                f"pages of {max(p.stat().st_size for p in pages) / 1024:.0f} KiB at most")
        if browser() and (report / "html" / "index.html").exists():
            blank = folder / "blank.html"
            blank.write_text("<!doctype html><title>blank</title>", encoding="utf-8")
            base, _ = page_load(blank.as_uri(), folder / "profile")
            biggest = folder / "report-full" if (folder / "report-full" / "html").is_dir() else report
            subject_pages = sorted((biggest / "html" / "gallery").rglob("*.html"))
            for page in [biggest / "html" / "index.html", *subject_pages[:2]]:
                wall, ready = page_load(page.as_uri(), folder / "profile")
                size = page.stat().st_size / 1024
                say(f"page {page.relative_to(biggest)}: {size:.0f} KiB; DOM ready after "
                    f"{ready if ready is None else round(ready, 2)} s (goal <= 3 s); browser start, load and dump "
                    f"{wall:.2f} s against {base:.2f} s for a blank page")
        else:
            say("no Chromium found: page load not measured")
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
