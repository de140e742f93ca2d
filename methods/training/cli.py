"""``python -m bench train``: train the EZIGen adapter, a trained-reference variant, or a projector
baseline (see methods/training/README.md for data layout and the paper's commands)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench import BenchError


def configure(parser: argparse.ArgumentParser) -> None:
    from methods.training.train import TRAINABLE_METHODS

    add = parser.add_argument
    add("--method", default="ezigen",
        help=f"what to train: {', '.join(TRAINABLE_METHODS)} (default ezigen)")
    add("--data", action="append", default=[], metavar="KIND:DIR",
        help="training pairs, repeatable: coco:DIR (COCO 2014 layout), ytvis:DIR (YouTube-VIS meta.json layout), "
             "synthetic:N (pairs built in code)")
    add("--out", type=Path, default=None,
        help="output folder: checkpoints, log, and the weights `bench run --adapter OUT` loads "
             "(default runs/train/<method>[-<preset>])")
    add("--preset", choices=["smoke", "tiny", "sd21-random"], default=None,
        help="smoke: tiny random models + synthetic pairs at 64 px, runs without any data; tiny/sd21-random: "
             "random base models with your --data")
    add("--weights", default=None, help="base model: Hugging Face id or diffusers folder "
        "(default stabilityai/stable-diffusion-2-1-base)")
    add("--resolution", type=int, default=None, help="training image size (default: the model's, 512 for SD 2.1)")
    add("--pairs", type=int, default=None,
        help="use N pairs, split evenly between the --data sources (the paper: 200000)")
    add("--epochs", type=int, default=1, help="passes over the pairs (default 1, the paper's)")
    add("--max-steps", type=int, default=None, help="stop after this many optimizer steps (overrides --epochs)")
    add("--batch-size", type=int, default=1, help="pairs per step and process (default 1)")
    add("--lr", type=float, default=1e-4, help="AdamW learning rate, constant (default 1e-4)")
    add("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    add("--max-grad-norm", type=float, default=1.0, help="gradient-norm clip (default 1.0; 0 turns it off)")
    add("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
        help="autocast precision (default no = fp32, the protocol's)")
    add("--subject-dropout", type=float, default=0.2,
        help="probability of zeroing a pair's subject features (default 0.2)")
    add("--recipe", choices=["release", "fixed"], default="release",
        help="release (default): as the released checkpoint was trained (80%% whole-batch subject dropout, "
             "4 slots with unmasked pads, the release's data selection); fixed: 20%% per-sample dropout, "
             "masked real slots only (docs/protocols.md section 1b)")
    add("--save-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    add("--keep-checkpoints", type=int, default=2, help="how many training checkpoints to keep (default 2)")
    add("--seed", type=int, default=0, help="seed of the data order and of every random draw")
    add("--workers", type=int, default=0, help="data-loading worker processes per training process")
    add("--resume", action="store_true", help="continue from the last checkpoint in --out (same settings)")
    add("--device", default=None, help="cpu to force the CPU (default: accelerate's choice)")
    add("--param", action="append", default=[], metavar="KEY=VALUE",
        help="method parameter override, e.g. --param encoder_model=ViT-B-16/openai for clip-projector")
    add("--no-progress", action="store_true", help="no progress bar")


#: Bounds of the numeric training options (checked before anything loads).
MAX_TRAIN_RESOLUTION = 2048
MAX_WORKERS = 256


def check_train_options(args) -> None:
    """Every numeric option: in range, finite, meaning something (an --epochs 0 run that trains
    nothing is refused, not reported as a success)."""
    from bench.options import MAX_SEED, check_device, check_float, check_int

    check_int(args.resolution, "--resolution", 8, MAX_TRAIN_RESOLUTION, multiple_of=8)
    check_int(args.pairs, "--pairs", 1)
    check_int(args.epochs, "--epochs", 1)
    check_int(args.max_steps, "--max-steps", 1)
    check_int(args.batch_size, "--batch-size", 1, 4096)
    check_int(args.save_every, "--save-every", 1)
    check_int(args.keep_checkpoints, "--keep-checkpoints", 1, 10_000)
    check_int(args.seed, "--seed", 0, MAX_SEED)
    check_int(args.workers, "--workers", 0, MAX_WORKERS)
    check_float(args.lr, "--lr", 0.0, 1.0, low_open=True)
    check_float(args.weight_decay, "--weight-decay", 0.0, 1.0)
    check_float(args.max_grad_norm, "--max-grad-norm", 0.0)
    check_float(args.subject_dropout, "--subject-dropout", 0.0, 1.0, high_open=True)
    if args.device is not None:
        check_device(args.device)
    from methods.training.data import parse_data_spec

    for item in args.data:                    # checked before any model loads
        kind, where = parse_data_spec(item)
        if kind == "synthetic":
            if not where.isdigit() or not 1 <= int(where) <= 1_000_000:
                raise BenchError(f"--data {item!r}: synthetic takes a pair count in 1..1000000 (synthetic:64)")
        elif not Path(where).expanduser().is_dir():
            raise BenchError(f"--data {item!r}: {where} is not a folder")


def run(args) -> int:
    from bench.options import parse_params
    from methods.training.train import TrainConfig, check_train_params, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("runs") / "train" / (args.method + (f"-{args.preset}" if args.preset else ""))
    if args.preset and args.weights:
        raise BenchError("--weights and --preset exclude each other: a preset builds random weights")
    check_train_options(args)
    from bench.output_guard import guard_folder

    guard_folder(out, "--out", [d.partition(":")[2] for d in args.data or ()] + [args.weights])   # before any work
    check_train_params(args.method, parse_params(args.param))
    if not args.data and args.preset != "smoke":
        raise BenchError("no training data: pass --data coco:DIR and/or --data ytvis:DIR (or --preset smoke)")
    cfg = TrainConfig(
        method=args.method, data=tuple(args.data), out=out, preset=args.preset,
        weights=args.weights or TrainConfig.weights, resolution=args.resolution, pairs=args.pairs,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, mixed_precision=args.mixed_precision,
        subject_dropout=args.subject_dropout, recipe=args.recipe, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, seed=args.seed, workers=args.workers, resume=args.resume,
        device=args.device, params=parse_params(args.param), progress=not args.no_progress)
    summary = train(cfg)
    print(json.dumps(summary, indent=2))
    print(f"weights in {out}: python -m bench run --method {args.method} --adapter {out}"
          + (" --preset smoke" if args.preset == "smoke" else ""))
    return 0
