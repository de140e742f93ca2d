"""CLIP/DINO projector baselines: tiny random ViTs, training, export, loading in `bench run`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from bench import BenchError
from bench.models import build_preset
from bench.registry import METHODS
from bench.types import GenRequest, LoadSpec
from methods.projector import BlockProjector, ProjectorMethod, block_widths, build_encoder
from methods.training.train import TrainConfig, train

R = 32


@pytest.mark.parametrize("kind", ["clip", "dino"])
def test_encoder_gives_patch_tokens(kind):
    encoder = build_encoder(kind, preset="tiny")
    images = torch.rand(2, 3, R, R) * 2 - 1
    tokens = encoder(images)
    patches = (224 // 32) ** 2 if kind == "clip" else (224 // 16) ** 2   # class token dropped
    assert tokens.shape == (2, patches, encoder.width)
    assert not torch.allclose(tokens[0], tokens[1])
    assert all(not p.requires_grad for p in encoder.parameters())


def test_projector_maps_to_each_block_width():
    components = build_preset("tiny")
    from methods.ezigen import transformer_block_names
    names = transformer_block_names(components.unet)
    widths = block_widths(components.unet, names)
    assert widths == [32, 64, 64, 64, 64, 32, 32]                # tiny: down 32/64, mid 64, up 64, 64, 32, 32
    out = BlockProjector(48, widths)(torch.zeros(3, 5, 48))
    assert [tuple(o.shape) for o in out] == [(3, 5, w) for w in widths]


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("proj") / "clip"
    components = build_preset("tiny")
    fresh = build_encoder("clip", preset="tiny").state_dict()
    summary = train(TrainConfig(method="clip-projector", preset="smoke", out=out, resolution=R, pairs=8,
                                max_steps=2, save_every=2, progress=False, device="cpu"), components=components)
    return out, summary, fresh


def test_training_updates_projector_and_adapter_only(trained_clip):
    out, summary, fresh_encoder = trained_clip
    assert summary["steps"] == 2
    cfg = json.loads((out / "projector.json").read_text())
    assert cfg["encoder"] == "clip" and cfg["block_widths"] == [32, 64, 64, 64, 64, 32, 32]
    trainable = load_file(str(next((out / "checkpoints").iterdir()) / "trainable.safetensors"))
    assert {k.split(".")[0] for k in trainable} == {"adapter", "projector"}
    assert json.loads((out / "training.json").read_text())["kind"] == "clip-projector"


def test_method_loads_and_generates(trained_clip, tmp_path):
    out, _, _ = trained_clip
    entry = METHODS.get("clip-projector")
    spec = LoadSpec(preset="tiny", adapter=str(out), resolution=R, num_inference_steps=3)
    method = entry.load()(spec, name="clip-projector", **{**entry.params, "iterative": False})
    saved = load_file(str(out / "projector.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in method.projector.state_dict().items())
    assert method.describe()["params"]["encoder"] == "clip"
    assert "reference_timestep" not in method.describe()["params"]
    subject = tmp_path / "s.png"
    Image.new("RGB", (R, R), (30, 200, 30)).save(subject)
    request = GenRequest("k", "a photo of a object", "object", (subject,), seed=3)
    first = method.generate([request])[0]
    again = method.generate([request])[0]
    assert first.size == (R, R) and first.tobytes() == again.tobytes()
    assert method.features.forward_passes == 1                 # encoded once, then cached
    assert first.info["bench"]["encoder"] == "clip" and first.info["bench"]["unet_calls"] == 2 * 3


def test_method_refuses_wrong_checkpoints(trained_clip, tmp_path):
    out, _, _ = trained_clip
    with pytest.raises(BenchError, match="trained projector"):
        ProjectorMethod(LoadSpec(preset="tiny", adapter="init", resolution=R), name="clip-projector")
    with pytest.raises(BenchError, match="clip encoder"):
        ProjectorMethod(LoadSpec(preset="tiny", adapter=str(out), resolution=R), name="dino-projector",
                        encoder="dino", iterative=False)
    with pytest.raises(BenchError, match="no reference UNet"):
        ProjectorMethod(LoadSpec(preset="tiny", adapter=str(out), resolution=R), name="clip-projector",
                        reference_timestep=1)


def test_dino_projector_trains(tmp_path):
    out = tmp_path / "dino"
    train(TrainConfig(method="dino-projector", preset="smoke", out=out, resolution=R, pairs=4, max_steps=1,
                      save_every=1, progress=False, device="cpu"))
    assert json.loads((out / "projector.json").read_text())["encoder"] == "dino"
    assert (out / "adapter.safetensors").exists()
