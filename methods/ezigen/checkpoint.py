"""EZIGen adapter checkpoints: our safetensors format and the official accelerate folder.

Key names are the official ones (docs/protocols.md section 1, "Official checkpoint key names")::

    {down,mid,up}_blocks.*.attentions.*.transformer_blocks.0.adapter.{to_q,to_k,to_v,to_out.0}.*
    {down,mid,up}_blocks.*.attentions.*.transformer_blocks.0.adapter_norm.{weight,bias}
    learnable_weights                                     # [number of blocks], 16 for SD 2.1

Formats read by :func:`read_checkpoint`:

- a ``.safetensors`` file holding those keys (what :func:`save_checkpoint` writes as
  ``adapter.safetensors``; a trained reference UNet goes to ``reference_unet.safetensors``);
- an accelerate ``save_state`` folder: ``model.safetensors``, ``model_1.safetensors``, ... or
  ``pytorch_model.bin``, ``pytorch_model_1.bin``, ... (sharded files are merged). Adapter keys
  may sit among the full UNet's weights and under a ``module.``/``unet.`` prefix; our UNet's
  own naming (``...transformer_blocks.0.fuser.adapter...``) is accepted too. A file holding only
  base-UNet keys is a reference UNet (used by the ``reference_trained`` variants);
- ``.bin`` files are read with ``torch.load(weights_only=True)``: never unpickled freely.

Loading is strict (:func:`load_adapter_state`): every adapter key must be present with the
adapter's shape; missing, misshaped or unknown keys raise :class:`CheckpointError` with a
report, never a partial load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench import BenchError
from bench.files import files_sha256

#: The official checkpoint, as the reference repository's README links it (Google Drive file id).
OFFICIAL_CHECKPOINT_ID = "1uucz9IQFT2NbwLvazdnOX2vAROn-0nxU"
OFFICIAL_CHECKPOINT_URL = f"https://drive.google.com/file/d/{OFFICIAL_CHECKPOINT_ID}/view"
OFFICIAL_CHECKPOINT_GET = (f"download checkpoint-200000.zip from {OFFICIAL_CHECKPOINT_URL} (linked from "
                           f"github.com/ZichengDuan/EZIGen's README; or `pip install gdown && gdown "
                           f"{OFFICIAL_CHECKPOINT_ID}`), `unzip checkpoint-200000.zip`, then pass "
                           "--adapter checkpoint-200000")
ADAPTER_FILE = "adapter.safetensors"
REFERENCE_FILE = "reference_unet.safetensors"
_PREFIXES = ("module.", "_orig_mod.", "unet.", "model.")
_ADAPTER_KEY = re.compile(r"(^learnable_weights$)|(\.transformer_blocks\.\d+\.(adapter|adapter_norm)\.)")
_SHARD = re.compile(r"^(?P<stem>.+?)-\d{5}-of-\d{5}\.(safetensors|bin)$")


class CheckpointError(BenchError):
    """A checkpoint that does not match the adapter (message lists the keys)."""


@dataclass
class Checkpoint:
    adapter_state: dict[str, torch.Tensor]
    reference_state: dict[str, torch.Tensor] | None
    files: list[Path]
    sha256: str
    ignored_base_keys: int = 0
    notes: list[str] = field(default_factory=list)


def normalise_key(key: str) -> str:
    """Strip wrapper prefixes and map our UNet naming (``.fuser.``) to the official names."""
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix) and key != prefix.rstrip("."):
                key, changed = key[len(prefix):], True
    return key.replace(".fuser.adapter", ".adapter")


def is_adapter_key(key: str) -> bool:
    return bool(_ADAPTER_KEY.search(key))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a tensor-only torch file "
                              f"(weights_only=True refused it: {type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a flat state dict of tensors")
    return state


def _model_file_groups(folder: Path) -> list[list[Path]]:
    """Weight files of an accelerate folder, grouped per saved model (shards together)."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".safetensors", ".bin") or not path.is_file():
            continue
        if path.name.startswith(("optimizer", "scheduler", "sampler", "random_states", "scaler")):
            continue
        m = _SHARD.match(path.name)
        groups.setdefault(m.group("stem") if m else path.stem, []).append(path)
    return [groups[k] for k in sorted(groups)]


def read_checkpoint(path: str | Path, base_keys: set[str]) -> Checkpoint:
    """Read adapter (and reference UNet) weights; ``base_keys``: the base UNet's state-dict keys."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"adapter checkpoint {path} does not exist")
    if path.is_file():
        groups = [[path]]
    elif (path / ADAPTER_FILE).exists():
        groups = [[path / ADAPTER_FILE]] + ([[path / REFERENCE_FILE]] if (path / REFERENCE_FILE).exists() else [])
    else:
        groups = _model_file_groups(path)
        if not groups:
            raise CheckpointError(f"{path}: no {ADAPTER_FILE}, model*.safetensors or pytorch_model*.bin "
                                  "(expected our adapter folder or an accelerate save_state folder)")
    adapter_state: dict[str, torch.Tensor] = {}
    reference_state = None
    unknown: list[str] = []
    ignored = 0
    notes: list[str] = []
    used: list[Path] = []
    for files in groups:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update({normalise_key(k): v for k, v in _read_tensors(f).items()})
        adapter_keys = [k for k in state if is_adapter_key(k)]
        label = ", ".join(f.name for f in files)
        if not adapter_keys and state and set(state) <= base_keys:
            if reference_state is not None:
                raise CheckpointError(f"{path}: two files hold full UNet weights; cannot tell which "
                                      "is the reference UNet")
            reference_state = state
            used += files
            notes.append(f"{label}: reference UNet weights ({len(state)} tensors)")
            continue
        for k in state:
            if k in adapter_keys:
                if k in adapter_state:
                    raise CheckpointError(f"{path}: key {k} appears in more than one file")
                adapter_state[k] = state[k]
            elif k in base_keys:
                ignored += 1
            else:
                unknown.append(f"{label}:{k}")
        used += files
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} unexpected keys that are neither EZIGen adapter "
                              f"nor base-UNet weights, e.g. {', '.join(unknown[:5])}")
    if not adapter_state:
        raise CheckpointError(f"{path}: no EZIGen adapter keys (…transformer_blocks.0.adapter.*, "
                              "adapter_norm.*, learnable_weights) found")
    if ignored:
        notes.append(f"{ignored} base-UNet tensors in the checkpoint ignored (the base model is loaded separately)")
    return Checkpoint(adapter_state, reference_state, used, files_sha256(used), ignored, notes)


def check_strict(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], what: str, source) -> None:
    """Refuse unless ``given`` has exactly ``expected``'s keys with the same shapes."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshaped = sorted(f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}"
                       for k in set(expected) & set(given) if given[k].shape != expected[k].shape)
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if items:
                more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:4])}{more}")
        raise CheckpointError(f"{source}: {what} does not match ({'; '.join(parts)}); nothing was loaded")


@torch.no_grad()
def load_adapter_state(adapter, state: dict[str, torch.Tensor], source="checkpoint") -> None:
    """Copy official-named tensors into ``adapter`` (an EZIGenAdapter) after a strict check."""
    expected = adapter.official_state_dict()
    check_strict(expected, state, f"the EZIGen adapter ({len(expected)} tensors)", source)
    for key, target in expected.items():
        target.copy_(state[key].to(target.dtype))


@torch.no_grad()
def load_reference_state(unet, state: dict[str, torch.Tensor], source="checkpoint") -> None:
    """Copy a full UNet state into ``unet`` (a reference UNet) after a strict check."""
    expected = {k: v for k, v in unet.state_dict().items() if ".fuser." not in k}
    check_strict(expected, state, "the reference UNet", source)
    unet.load_state_dict(state, strict=True)


def save_checkpoint(adapter, folder: str | Path, reference_unet=None, metadata: dict | None = None) -> Path:
    """Write ``adapter.safetensors`` (official key names) and, if given, ``reference_unet.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "ezigen-adapter", "blocks": str(len(adapter.block_names))}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.official_state_dict().items()}
    save_file(state, str(folder / ADAPTER_FILE), metadata=meta)
    if reference_unet is not None:
        ref = {k: v.detach().cpu().contiguous() for k, v in reference_unet.state_dict().items()
               if ".fuser." not in k}
        save_file(ref, str(folder / REFERENCE_FILE), metadata={"format": "ezigen-reference-unet"})
    return folder


#: The adapter's weights in fp32 (bench doctor): per SD 2.1 transformer block a copy of attn1's
#: q/k/v/out (4 d^2; 16 blocks, d = 320/640/1280) = 49.6M parameters. The official zip may hold more.
ADAPTER_BYTES = 198_000_000


def adapter_need(adapter: str | None, what: str = "EZIGen adapter weights (--adapter)",
                 get: str = OFFICIAL_CHECKPOINT_GET, size: int | None = ADAPTER_BYTES) -> list:
    """The --adapter piece of a run (bench/needs.py): nothing for ``init`` (the untrained adapter),
    a missing piece when no --adapter is given, else the weight files the path names."""
    from bench.files import weight_files
    from bench.needs import probe

    if adapter == "init":
        return []
    if adapter is None:
        return [probe(what, "--adapter", get, lambda: "no --adapter given", where="--adapter", size=size)]

    def problem() -> str | None:
        try:
            weight_files(Path(adapter))
        except BenchError as exc:
            return str(exc)
        return None
    return [probe(what, str(Path(adapter).expanduser()), get, problem, size=size, measure=Path(adapter).expanduser())]
