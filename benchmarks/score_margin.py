"""The harness's own cost per image when scoring: `bench score --images` at two sizes against a plain loop.

Not a test. Two folders of external 64 px PNGs in the documented layout (``--small`` and ``--large``
images, over the synthetic DreamBench copy of benchmarks/synthetic_run.py) are scored with the tiny
metric models (CLIP-T, CLIP-I, DINO) as a user runs it, each in a fresh process; the difference
between the two, divided by the difference in images, is the marginal cost per image (imports,
model building and suite loading cancel out). Beside it, in the same run and over the same files,
a plain single-process loop that decodes each file, resizes it to 224 x 224 and normalises it:
the least any scorer must do per image. Per image it prints, at the margin:

- wall time, and its ratio to the plain loop (the goal: at most 5x on 2 idle cores);
- the main process's CPU time, and the part of it inside the metric models' forwards;
- the decoding workers' CPU time (the main process's reaped children).

    python benchmarks/score_margin.py                  # 300 vs 3000 images, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic_run import picture, with_text_chunk, write_suite  # noqa: E402

#: runs ``python -m bench`` and prints at exit the CPU seconds of the process itself and of its
#: reaped children (the DataLoader workers), and the CPU seconds inside outermost nn.Module forwards
_CLOCKED = ("import atexit, resource, runpy, sys, time\n"
            "import torch\n"
            "state = {'depth': 0, 'start': 0.0, 'forward': 0.0}\n"
            "def pre(*_):\n"
            "    if state['depth'] == 0:\n"
            "        state['start'] = time.process_time()\n"
            "    state['depth'] += 1\n"
            "def post(*_):\n"
            "    state['depth'] -= 1\n"
            "    if state['depth'] == 0:\n"
            "        state['forward'] += time.process_time() - state['start']\n"
            "torch.nn.modules.module.register_module_forward_pre_hook(pre)\n"
            "torch.nn.modules.module.register_module_forward_hook(post)\n"
            "def report():\n"
            "    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "    print('CLOCK', me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, state['forward'],\n"
            "          file=sys.stderr)\n"
            "atexit.register(report)\n"
            "sys.argv = ['bench'] + sys.argv[1:]\n"
            "runpy.run_module('bench', run_name='__main__')\n")


def write_external(folder: Path, data_root: Path, n_images: int, size: int = 64, pool: int = 48) -> list[Path]:
    """``n_images`` PNGs in the layout DIR/<subject>/<prompt>/s<seed>/i<k>.png, in the plan's order
    (subject by subject), each with its own bytes; returns their paths."""
    from bench.plan import Plan
    from bench.store import encode_png
    from bench.suites import load_suite

    samples = load_suite("dreambench", data_root).samples()
    seeds = tuple(range(max(1, -(-n_images // (len(samples) * 4)))))
    requests = Plan(samples, samples, seeds, 4).requests()[:n_images]
    blobs = [encode_png(picture(k, size)) for k in range(pool)]
    paths = []
    for n, request in enumerate(requests):
        _, subject, prompt, seed, index = request.key.split("/")
        path = folder / subject / prompt / seed / f"{index}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(with_text_chunk(blobs[n % pool], request.key))
        paths.append(path)
    return paths


def score_external(images: Path, data_root: Path, out: Path, workers: int | None) -> dict:
    """``bench score --images`` in a fresh process: wall, main-process CPU, workers' CPU and forward seconds."""
    shutil.rmtree(out, ignore_errors=True)
    args = ["score", "--suite", "dreambench", "--data-root", str(data_root), "--images", str(images),
            "--metric-preset", "tiny", "--out", str(out), "--no-progress"]
    args += ["--workers", str(workers)] if workers is not None else []
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CLOCKED, *args], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    clock = [line.split()[1:] for line in result.stderr.splitlines() if line.startswith("CLOCK")][-1]
    main_cpu, workers_cpu, forward = map(float, clock)
    return {"wall": wall, "main": main_cpu, "workers": workers_cpu, "forward": forward}


def plain_loop(paths: list[Path]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a single-process loop over ``paths``: decode, resize to
    224 x 224 (bicubic), to float, divide by 255, normalise (CLIP's mean and std)."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((224, 224), Image.BICUBIC)
        pixels = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255)
        TF.normalize(pixels, mean, std)
    return time.perf_counter() - start, time.process_time() - cpu


def measure(folder: Path, small: int, large: int, workers: int | None = None, repeats: int = 3) -> dict:
    """The marginal cost per image (ms) of `bench score --images` between ``small`` and ``large``
    images and the plain loop's cost per image over the large folder's files (run just before and
    just after the two scorings, averaged), each repeat measured back to back; returns the repeat
    with the median ratio and every repeat's ratio."""
    data_root = folder / "suite"
    if not (data_root / "dataset").is_dir():
        write_suite(data_root)
    small_paths = write_external(folder / f"external-{small}", data_root, small)
    large_paths = write_external(folder / f"external-{large}", data_root, large)
    plain_loop(small_paths)                                       # imports and the page cache warmed
    rows = []
    for _ in range(repeats):
        before = plain_loop(large_paths)                          # the loop before and after, averaged
        a = score_external(folder / f"external-{small}", data_root, folder / "scored-small", workers)
        b = score_external(folder / f"external-{large}", data_root, folder / "scored-large", workers)
        after = plain_loop(large_paths)
        loop, loop_cpu = ((x + y) / 2 / len(large_paths) for x, y in zip(before, after))
        margin = {k: (b[k] - a[k]) / (large - small) for k in a}
        rows.append({**{k: 1000 * v for k, v in margin.items()}, "plain": 1000 * loop, "plain_cpu": 1000 * loop_cpu,
                     "ratio": margin["wall"] / loop, "cpu_ratio": (margin["main"] + margin["workers"]) / loop_cpu,
                     "wall_small": a["wall"], "wall_large": b["wall"], "load": os.getloadavg()[0]})
    middle = sorted(rows, key=lambda r: r["ratio"])[len(rows) // 2]
    return {**middle, "ratios": [r["ratio"] for r in rows], "cpu_ratios": [r["cpu_ratio"] for r in rows],
            "loads": [r["load"] for r in rows], "small": small, "large": large}


def lines(result: dict) -> list[str]:
    r = result
    return [f"## bench score --images, tiny metric models: {r['small']} vs {r['large']} external 64 px images, "
            "at the margin (median of the repeats by ratio)",
            f"wall {r['wall_small']:.1f} s and {r['wall_large']:.1f} s: {r['wall']:.2f} ms per image; a plain "
            f"single-process decode + resize + normalise loop over the same files {r['plain']:.2f} ms per image; "
            f"ratio {r['ratio']:.1f}x (goal <= 5x; every repeat: {', '.join(f'{x:.1f}x' for x in r['ratios'])})",
            f"per image: main process {r['main']:.2f} ms of CPU, of which {r['forward']:.2f} ms inside the metric "
            f"forwards; decoding workers {r['workers']:.2f} ms of CPU; CPU of both against the loop's "
            f"{r['plain_cpu']:.2f} ms: {r['cpu_ratio']:.1f}x (every repeat: "
            f"{', '.join(f'{x:.1f}x' for x in r['cpu_ratios'])}); load average after each repeat: "
            f"{', '.join(f'{x:.1f}' for x in r['loads'])}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=None, help="bench score --workers (default: its own)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small must be positive and below --large")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-margin-"))
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {len(os.sched_getaffinity(0))} CPU core(s), load average {load:.1f} at the start, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    try:
        for line in lines(measure(folder, args.small, args.large, args.workers, args.repeats)):
            print(line)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
