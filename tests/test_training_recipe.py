"""`bench train --recipe release|fixed` (docs/protocols.md section 1b, "Training, as released")."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open

from bench.models import build_preset
from methods.training.objectives import PAD_TEXT, EZIGenTrainee
from methods.training.pairs import SyntheticPairs, collate_pairs
from methods.training.train import TrainConfig, train

R = 32


def test_release_dropout_is_80_percent_for_the_whole_batch():
    trainee = EZIGenTrainee(build_preset("tiny"))
    assert trainee.recipe == "release"
    trainee.train()
    g = torch.Generator().manual_seed(0)
    draws = [trainee.keep_subjects(4, g) for _ in range(2000)]
    assert all(bool((d == d[0]).all()) for d in draws)              # one decision per batch
    dropped = sum(not bool(d[0]) for d in draws) / len(draws)
    # the release: random.randint(1, 10) / 10 > 0.2 is true for 8 of the 10 values
    assert abs(dropped - 8 / 10) < 0.03


def test_release_runs_four_slots_with_unmasked_zero_pads(monkeypatch):
    from methods.ezigen import adapter as adapter_module

    trainee = EZIGenTrainee(build_preset("tiny"))
    seen, inputs = [], []
    real_kwargs = adapter_module.adapter_kwargs
    monkeypatch.setattr(adapter_module, "adapter_kwargs", lambda tokens: seen.append(tokens) or real_kwargs(tokens))
    real_features = trainee.subject_features
    monkeypatch.setattr(trainee, "subject_features",
                        lambda images, prompts, t, g: inputs.append((images, prompts)) or real_features(images, prompts, t, g))
    monkeypatch.setattr(trainee, "keep_subjects", lambda b, g: torch.ones(b, dtype=torch.bool))
    batch = collate_pairs([SyntheticPairs(1, R).load(0)])            # one real subject, three empty slots
    with torch.no_grad():
        trainee(batch, torch.Generator().manual_seed(0))
    images, prompts = inputs[-1]
    assert images.shape[0] == 4 and prompts[1:] == [PAD_TEXT] * 3
    assert bool((images[1:] == 0).all())                          # the release's zero tensor (normalised space)
    tokens = seen[-1]
    assert tokens.slot_mask is None                               # the mask is never applied
    for f in tokens.features:
        slots = f.view(1, 4, -1, f.shape[-1]).abs().sum(dim=(2, 3))
        assert bool((slots > 0).all())                            # pads reach the adapter as features


def test_recipe_is_recorded_in_the_checkpoint(tmp_path):
    out = tmp_path / "ezigen"
    train(TrainConfig(preset="smoke", out=out, resolution=R, pairs=4, max_steps=1, save_every=1,
                      progress=False, device="cpu"), components=build_preset("tiny"))
    with safe_open(str(out / "adapter.safetensors"), "pt") as f:
        assert f.metadata()["recipe"] == "release"
    assert json.loads((out / "training.json").read_text())["recipe"] == "release"
    assert json.loads((out / "train.json").read_text())["config"]["recipe"] == "release"
