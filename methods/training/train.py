"""The training loop behind ``python -m bench train`` (docs/protocols.md section 1, "Training").

Defaults are the reference code's: AdamW (lr 1e-4, betas (0.9, 0.999), weight decay 0.01,
eps 1e-8), constant learning rate, grad-norm clip 1.0, fp32, batch 1, one epoch, subject
dropout 0.2. Runs under accelerate: one process as is, several with
``accelerate launch -m bench train ...`` (each process takes every w-th pair of the epoch order).

Determinism and resume. The epoch order is a permutation seeded by ``seed`` and the epoch;
every random draw of step s comes from a generator seeded by (seed, s, process), and a pair's
own draws (crops, flips, frames) from (seed, source, index). A checkpoint stores the trainable
weights, the optimizer state, the step and the data position (epoch, pairs consumed), so
``--resume`` continues exactly where the checkpoint was taken: an interrupted and resumed run
ends with the same parameters as an uninterrupted one (tested bit for bit on CPU).

Bad pairs (missing files, empty or filtered masks) are skipped: the batch is filled from the
next pairs in order and the skip count is shown in the progress bar and the log.

Output folder::

    OUT/train.json                     the configuration (checked on --resume) and the summary
    OUT/train_log.jsonl                one line per step: step, loss, epoch, position, skipped
    OUT/checkpoints/step-00001000/     trainable.safetensors, optimizer.pt, state.json
    OUT/adapter.safetensors, ...       the latest weights, loadable by `bench run --adapter OUT`
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bench import BenchError

log = logging.getLogger(__name__)

TRAINABLE_METHODS = ("ezigen", "ezigen-ref-trained-adaptive", "ezigen-ref-trained-t1",
                     "clip-projector", "dino-projector")
SMOKE = dict(model_preset="tiny", resolution=64, pairs=64, data=("synthetic:64",))
CHECKPOINTS = "checkpoints"
# fields of TrainConfig that change the trajectory: a resumed run must agree on all of them
TRAJECTORY_FIELDS = ("method", "params", "data", "preset", "weights", "resolution", "pairs", "batch_size",
                     "lr", "betas", "weight_decay", "eps", "max_grad_norm", "mixed_precision",
                     "subject_dropout", "recipe", "seed")


@dataclass
class TrainConfig:
    method: str = "ezigen"
    data: tuple[str, ...] = ()
    out: Path = Path("runs/train")
    preset: str | None = None                 # "smoke" (tiny models + synthetic pairs), "tiny", "sd21-random"
    weights: str = "stabilityai/stable-diffusion-2-1-base"
    resolution: int | None = None             # None: the model's native size (512 for SD 2.1)
    pairs: int | None = None                  # None: every pair the data offers
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"               # "no" (fp32) | "bf16" | "fp16"
    subject_dropout: float = 0.2
    recipe: str = "release"                   # "release" (as the released checkpoint was trained) | "fixed"
    save_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    workers: int = 0
    resume: bool = False
    device: str | None = None                 # None: accelerate's choice (a GPU when there is one)
    params: dict = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self):
        self.out = Path(self.out)
        self.data = tuple(self.data)
        self.betas = tuple(float(b) for b in self.betas)
        if self.preset == "smoke":
            if self.resolution is None:
                self.resolution = SMOKE["resolution"]
            if not self.data:
                self.data = (f"synthetic:{self.pairs or SMOKE['pairs']}",)
        if self.batch_size < 1:
            raise BenchError(f"--batch-size must be >= 1, not {self.batch_size}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise BenchError(f"--mixed-precision must be no, bf16 or fp16, not {self.mixed_precision!r}")
        if self.recipe not in ("release", "fixed"):
            raise BenchError(f"--recipe must be release or fixed, not {self.recipe!r}")
        if not 0 <= self.subject_dropout < 1:
            raise BenchError(f"--subject-dropout must be in [0, 1), not {self.subject_dropout}")

    @property
    def model_preset(self) -> str | None:
        return SMOKE["model_preset"] if self.preset == "smoke" else self.preset

    def trajectory(self) -> dict:
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in TRAJECTORY_FIELDS}


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    position: int = 0          # pairs of this process's share of ``epoch`` consumed
    skipped: int = 0


# ---- building -------------------------------------------------------------------------------

#: The --param keys `bench train` reads, per kind of method (anything else would be ignored).
TRAIN_PARAMS = {"methods.projector:ProjectorMethod": ("encoder", "encoder_model"),
                "ezigen": ("reference_timestep", "reference_trained")}


def check_train_params(method: str, params: dict) -> None:
    """Refuse a --param of `bench train` that it would ignore or could not use, before any model
    loads (`--param nope=1` used to train as if it were not there)."""
    from bench.registry import METHODS

    entry = METHODS.get(method)
    known = TRAIN_PARAMS.get(entry.target, TRAIN_PARAMS["ezigen"])
    for key, value in params.items():
        if key not in known:
            raise BenchError(f"--param {key}: `bench train --method {method}` has no parameter {key!r}; "
                             f"its parameters: {', '.join(known)}")
    timestep = params.get("reference_timestep")
    if timestep is not None and timestep != "adaptive" and not (
            isinstance(timestep, int) and not isinstance(timestep, bool) and 0 <= timestep <= 999):
        raise BenchError(f"--param reference_timestep={timestep!r}: expected an integer 0..999 or 'adaptive'")
    if "reference_trained" in params and not isinstance(params["reference_trained"], bool):
        raise BenchError(f"--param reference_trained={params['reference_trained']!r}: expected true or false")


def build_trainee(cfg: TrainConfig, components, device: str):
    """The Trainee for ``cfg.method`` (registry parameters + ``--param`` overrides)."""
    from bench.registry import METHODS
    from methods.training.objectives import EZIGenTrainee, ProjectorTrainee

    entry = METHODS.get(cfg.method)
    params = {**entry.params, **cfg.params}
    if cfg.method not in TRAINABLE_METHODS and entry.target != "methods.projector:ProjectorMethod":
        if entry.target == "methods.ezigen:EZIGenMethod":
            raise BenchError(f"--method {cfg.method} samples with the adapter of `ezigen` (frozen reference "
                             f"UNet, t=1): train it with --method ezigen")
        raise BenchError(f"--method {cfg.method} has nothing to train; trainable: {', '.join(TRAINABLE_METHODS)}")
    if entry.target == "methods.projector:ProjectorMethod":
        from methods.projector import build_encoder
        encoder = build_encoder(params.get("encoder", "clip"), params.get("encoder_model"), cfg.model_preset, device)
        return ProjectorTrainee(components, encoder, cfg.subject_dropout, cfg.recipe)
    timestep = params.get("reference_timestep", 1)
    if timestep != "adaptive":
        timestep = int(timestep)
    return EZIGenTrainee(components, reference_trained=bool(params.get("reference_trained", False)),
                         reference_timestep=timestep, subject_dropout=cfg.subject_dropout, recipe=cfg.recipe)


def check_frozen(trainee) -> None:
    """Exactly the trainee's trainable parameters require gradients (docs/protocols.md section 1)."""
    trainable = {id(p) for p in trainee.trainable_parameters()}
    wrong = [n for n, p in trainee.named_parameters(remove_duplicate=False) if p.requires_grad != (id(p) in trainable)]
    if wrong:
        raise RuntimeError(f"parameters with the wrong requires_grad: {wrong[:5]}")


def check_gradients(trainee) -> None:
    """After a backward pass: no frozen parameter holds a gradient."""
    trainable = {id(p) for p in trainee.trainable_parameters()}
    leaked = [n for n, p in trainee.named_parameters(remove_duplicate=False) if p.grad is not None and id(p) not in trainable]
    if leaked:
        raise RuntimeError(f"frozen parameters received gradients: {leaked[:5]}")


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    digest = hashlib.sha256(f"bench-train/{seed}/{step}/{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _identity(x):
    return x


def pair_stream(source, seed: int, epoch: int, position: int, rank: int, world: int, workers: int):
    """(pair or None, epoch, position after it) for ever, epoch after epoch, from a resume point."""
    from torch.utils.data import DataLoader

    from methods.training.data import epoch_order
    from methods.training.pairs import IndexedPairs

    while True:
        order = epoch_order(len(source), seed, epoch, rank, world)
        if position < len(order):
            loader = DataLoader(IndexedPairs(source, order[position:], seed), batch_size=None, shuffle=False,
                                num_workers=workers, collate_fn=_identity, persistent_workers=False)
            for pair in loader:
                position += 1
                yield pair, epoch, position
        epoch, position = epoch + 1, 0


def batch_stream(stream, batch_size: int):
    """Batches of ``batch_size`` good pairs: (batch, epoch, position, skipped since the last batch)."""
    from methods.training.pairs import collate_pairs

    pending, skipped = [], 0
    for pair, epoch, position in stream:
        if pair is None:
            skipped += 1
            continue
        pending.append(pair)
        if len(pending) == batch_size:
            yield collate_pairs(pending), epoch, position, skipped
            pending, skipped = [], 0


# ---- checkpoints ----------------------------------------------------------------------------

def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_training_checkpoint(out: Path, trainee, optimizer, state: TrainState, keep: int) -> Path:
    from safetensors.torch import save_file

    final = out / CHECKPOINTS / f"step-{state.step:08d}"
    tmp = out / CHECKPOINTS / f".tmp-step-{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainee.trainable_state().items()},
              str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(out)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_checkpoint(folder: Path, trainee, optimizer) -> TrainState:
    from safetensors.torch import load_file

    state = load_file(str(folder / "trainable.safetensors"))
    device = trainee.device
    trainee.load_trainable_state({k: v.to(device) for k, v in state.items()})
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    return TrainState(**json.loads((folder / "state.json").read_text()))


def prepare_out(cfg: TrainConfig, world: int) -> Path | None:
    """Check ``out`` against --resume; returns the checkpoint to resume from (or None)."""
    info_path = cfg.out / "train.json"
    existing = checkpoint_dirs(cfg.out)
    if not cfg.resume:
        if existing:
            raise BenchError(f"--out {cfg.out} already holds training checkpoints: pass --resume to continue "
                             f"or choose another --out")
        return None
    if not existing:
        raise BenchError(f"--resume: no checkpoint under {cfg.out / CHECKPOINTS}")
    if info_path.exists():
        saved = json.loads(info_path.read_text())
        before, now = saved.get("config", {}), cfg.trajectory()
        differ = [k for k in TRAJECTORY_FIELDS if k in before and before[k] != now[k]]
        if saved.get("processes", world) != world:
            differ.append("number of processes")
        if differ:
            raise BenchError(f"--resume: {cfg.out} was trained with other settings ({', '.join(differ)}); "
                             f"resume with the same ones or choose another --out")
    return existing[-1]


# ---- the loop -------------------------------------------------------------------------------

def train(cfg: TrainConfig, on_step=None, components=None, source=None) -> dict:
    """Train; returns a summary. ``on_step(step, loss)`` is called after every optimizer step
    (tests use it to interrupt a run); ``components``: an already loaded base model to train on
    (default: loaded from ``cfg.weights`` / ``cfg.preset``; it is modified: the adapter is
    attached to its UNet); ``source``: a :class:`~methods.training.pairs.PairSource` to train on
    instead of the one ``cfg.data`` describes (tests build their own pair sets)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    from bench.models import load_components
    from methods.training.data import build_source

    if cfg.method not in TRAINABLE_METHODS:
        from bench.registry import METHODS
        METHODS.get(cfg.method)                      # unknown names: did-you-mean error
    find_unused = "ref-trained" in cfg.method      # a trained reference UNet's head gets no gradient
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.device == "cpu",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    rank, world = accelerator.process_index, accelerator.num_processes
    resume_from = prepare_out(cfg, world)
    device = str(accelerator.device)
    if components is None:
        components = load_components(cfg.weights, cfg.model_preset, device=device, dtype="fp32")
    resolution = cfg.resolution or components.resolution
    trainee = build_trainee(cfg, components, device)
    check_frozen(trainee)
    if source is None:
        source = build_source(cfg.data, resolution, cfg.pairs, cfg.recipe)
    steps_per_epoch = max(1, len(source) // (cfg.batch_size * world))
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(trainee.trainable_parameters(), lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay, eps=cfg.eps)
    state = TrainState()
    if resume_from is not None:
        state = load_training_checkpoint(resume_from, trainee, optimizer)
        log.info("resuming from %s (step %d)", resume_from, state.step)
    model, optimizer = accelerator.prepare(trainee, optimizer)
    params = trainee.trainable_parameters()
    main = accelerator.is_main_process
    if main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        _write_json(cfg.out / "train.json", {"config": cfg.trajectory(), "processes": world,
                                             "method": trainee.describe(), "pairs": len(source),
                                             "steps": total, "resolution": resolution,
                                             "model": components.describe()})
        _truncate_log(cfg.out / "train_log.jsonl", state.step)

    batches = batch_stream(pair_stream(source, cfg.seed, state.epoch, state.position, rank, world, cfg.workers),
                           cfg.batch_size)
    bar = tqdm(total=total, initial=state.step, desc=f"train {cfg.method}",
               disable=not (cfg.progress and accelerator.is_local_main_process), dynamic_ncols=True)
    losses, started, first_step = [], time.perf_counter(), state.step
    model.train()
    log_file = open(cfg.out / "train_log.jsonl", "a") if main else None
    try:
        while state.step < total:
            batch, epoch, position, skipped = next(batches)
            loss = model(batch, step_generator(cfg.seed, state.step, rank))
            accelerator.backward(loss)
            if state.step == first_step:
                check_gradients(trainee)
            if accelerator.sync_gradients and cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.epoch, state.position = epoch, position
            state.skipped += skipped
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                raise BenchError(f"the loss became {value} at step {state.step}; try --mixed-precision no or a lower --lr")
            if log_file:
                log_file.write(json.dumps({"step": state.step, "loss": value, "epoch": epoch,
                                           "position": position, "skipped": state.skipped}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", skipped=state.skipped)
            if state.step % cfg.save_every == 0 or state.step == total:
                _checkpoint(accelerator, cfg, trainee, optimizer, state, log_file)
            if on_step is not None:
                on_step(state.step, value)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    seconds = time.perf_counter() - started
    done = state.step - first_step
    summary = {"steps": state.step, "steps_this_run": done, "seconds": round(seconds, 3),
               "seconds_per_step": round(seconds / done, 4) if done else None,
               "first_loss": losses[0] if losses else None,
               "last_loss_mean": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
               "skipped": state.skipped, "epoch": state.epoch, "out": str(cfg.out)}
    if main:
        info = json.loads((cfg.out / "train.json").read_text())
        info["summary"] = summary
        _write_json(cfg.out / "train.json", info)
        if state.skipped:
            log.warning("%d bad pairs were skipped (see the log for which)", state.skipped)
    accelerator.wait_for_everyone()
    return summary


def _checkpoint(accelerator, cfg, trainee, optimizer, state, log_file) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if log_file:
            log_file.flush()
        save_training_checkpoint(cfg.out, trainee, optimizer, state, cfg.keep_checkpoints)
        trainee.export(cfg.out)
    accelerator.wait_for_everyone()


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))
