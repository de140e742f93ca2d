"""Write a trained method's weights in the format ``bench run --adapter DIR`` loads.

- the adapter: ``adapter.safetensors`` with the official key names
  (:func:`methods.ezigen.checkpoint.save_checkpoint`);
- a trained reference UNet (table 7's ``ezigen-ref-trained-*``): ``reference_unet.safetensors``
  beside it (same function);
- a projector baseline: ``projector.safetensors`` + ``projector.json`` (methods/projector.py);
- ``training.json``: what was trained (method, reference timestep, encoder), for provenance.

Files are written into a temporary sibling folder and moved into place, so an interrupted
export never leaves a half-written adapter where ``bench run`` would read it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

TRAINING_INFO = "training.json"
WEIGHT_FILES = ("adapter.safetensors", "reference_unet.safetensors", "projector.safetensors",
                "projector.json", TRAINING_INFO)


def save_adapter_folder(folder, trainee, info: dict | None = None) -> Path:
    from methods.ezigen.checkpoint import save_checkpoint
    from methods.projector import save_projector

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    described = trainee.describe()
    reference = trainee.reference_unet if getattr(trainee, "reference_trained", False) else None
    save_checkpoint(trainee.adapter, tmp, reference_unet=reference,
                    metadata={"trained_by": "bench train", "kind": described["kind"],
                              "recipe": described.get("recipe", "unknown")})
    if hasattr(trainee, "projector"):
        save_projector(tmp, trainee.projector, trainee.encoder)
    (tmp / TRAINING_INFO).write_text(json.dumps({**described, **(info or {})}, indent=2, default=str))
    for name in WEIGHT_FILES:                     # replace every weight file, drop stale ones
        if (tmp / name).exists():
            os.replace(tmp / name, folder / name)
        elif (folder / name).exists():
            (folder / name).unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    return folder
