"""`bench train`: frozen parameters, checkpoints, resume, export -> EZIGenMethod, subject use."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bench import BenchError
from bench.models import build_preset
from bench.types import GenRequest, LoadSpec
from methods.training.objectives import EZIGenTrainee
from methods.training.pairs import SyntheticPairs, TrainingPair, collate_pairs
from methods.training.train import TrainConfig, checkpoint_dirs, train

R = 32   # training resolution of these tests (latents 4 x 4)


def smoke(out, **kw) -> TrainConfig:
    base = dict(preset="smoke", out=out, resolution=R, pairs=16, batch_size=2, save_every=2,
                progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def unet_base_state(unet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in unet.state_dict().items() if ".fuser." not in k}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three steps of `ezigen` on the smoke preset, with the components kept for inspection."""
    out = tmp_path_factory.mktemp("train") / "ezigen"
    components = build_preset("tiny")
    summary = train(smoke(out, max_steps=3), components=components)
    return out, components, summary


def test_frozen_parameters_are_bit_identical(trained):
    out, components, summary = trained
    fresh = build_preset("tiny")
    after = unet_base_state(components.unet)
    before = unet_base_state(fresh.unet)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    for name in ("vae", "text_encoder"):
        a, b = getattr(components, name).state_dict(), getattr(fresh, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b)
    # ... while the adapter did move away from its initialisation (copies of norm1/attn1, w = 1)
    trained_state = load_file(str(out / "adapter.safetensors"))
    assert not torch.equal(trained_state["learnable_weights"], torch.ones_like(trained_state["learnable_weights"]))


def test_outputs_log_and_checkpoints(trained):
    out, _, summary = trained
    assert summary["steps"] == 3 and summary["skipped"] == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002", "step-00000003"]
    info = json.loads((out / "train.json").read_text())
    assert info["config"]["lr"] == 1e-4 and info["config"]["betas"] == [0.9, 0.999]
    assert info["summary"]["steps"] == 3 and info["resolution"] == R


def test_export_loads_in_the_method(trained):
    from methods.ezigen import EZIGenMethod

    out, _, _ = trained
    spec = LoadSpec(preset="tiny", adapter=str(out), resolution=R, num_inference_steps=4)
    method = EZIGenMethod(spec, name="ezigen", iterative=False)
    saved = load_file(str(out / "adapter.safetensors"))
    loaded = method.adapter.official_state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert "trained adapter" in method.describe()["weights_status"]


def test_only_trainable_parameters_get_gradients_and_requires_grad():
    from methods.training.train import check_frozen, check_gradients

    trainee = EZIGenTrainee(build_preset("tiny"))
    check_frozen(trainee)
    batch = collate_pairs([SyntheticPairs(2, R).load(i) for i in range(2)])
    trainee.train()
    trainee(batch, torch.Generator().manual_seed(0)).backward()
    check_gradients(trainee)
    assert all(p.grad is not None for p in trainee.trainable_parameters())
    trainee.unet.conv_in.weight.requires_grad_(True)            # a leak must be caught
    with pytest.raises(RuntimeError, match="requires_grad"):
        check_frozen(trainee)


def test_subject_dropout_rate_and_direction():
    trainee = EZIGenTrainee(build_preset("tiny"), recipe="fixed")
    trainee.train()
    g = torch.Generator().manual_seed(0)
    kept = torch.cat([trainee.keep_subjects(100, g) for _ in range(50)])
    assert 0.185 < 1 - kept.float().mean() < 0.215         # p = 0.2 dropped, not the reference code's 0.8
    trainee.eval()
    assert trainee.keep_subjects(100, g).all()


def test_dropout_zeroes_features_and_empty_slots_are_masked(monkeypatch):
    from methods.ezigen import adapter as adapter_module

    trainee = EZIGenTrainee(build_preset("tiny"), recipe="fixed")
    seen = []
    real_kwargs = adapter_module.adapter_kwargs
    monkeypatch.setattr(adapter_module, "adapter_kwargs", lambda tokens: seen.append(tokens) or real_kwargs(tokens))
    monkeypatch.setattr(trainee, "keep_subjects", lambda b, g: torch.tensor([True, False, True])[:b])
    pair = SyntheticPairs(1, R).load(0)
    three = TrainingPair(pair.target, "x", [pair.subjects[0]] * 3, ["a photo of a object."] * 3)
    two = TrainingPair(pair.target, "x", [pair.subjects[0]] * 2, ["a photo of a object."] * 2)
    trainee.train()
    with torch.no_grad():
        trainee(collate_pairs([pair, three, two]), torch.Generator().manual_seed(0))
    tokens = seen[-1]
    assert tokens.slot_mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    for f in tokens.features:                                   # [B, 3 slots * L, C]
        slots = f.view(3, 3, -1, f.shape[-1]).abs().sum(dim=(2, 3))
        assert (slots[1] == 0).all()                            # sample 1 dropped: all zero
        assert (slots[0, 1:] == 0).all() and (slots[2, 2] == 0).all()   # empty slots hold nothing
        assert (slots[0, 0] > 0) and (slots[2, :2] > 0).all()
    with torch.no_grad():                                       # single-subject batch: one slot, no mask
        trainee(collate_pairs([pair, pair]), torch.Generator().manual_seed(0))
    assert seen[-1].slot_mask is None
    assert seen[-1].features[0].shape[1] * 3 == seen[-2].features[0].shape[1]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    train(smoke(full, max_steps=4, batch_size=1))

    class Interrupt(Exception):
        pass

    def stop_at_3(step, loss):
        if step == 3:
            raise Interrupt

    broken = tmp_path / "broken"
    with pytest.raises(Interrupt):
        train(smoke(broken, max_steps=4, batch_size=1), on_step=stop_at_3)
    assert [p.name for p in checkpoint_dirs(broken)] == ["step-00000002"]
    with pytest.raises(BenchError, match="--resume"):
        train(smoke(broken, max_steps=4, batch_size=1))
    with pytest.raises(BenchError, match="lr"):
        train(smoke(broken, max_steps=4, batch_size=1, lr=1e-3, resume=True))
    summary = train(smoke(broken, max_steps=4, batch_size=1, resume=True))
    assert summary["steps"] == 4 and summary["steps_this_run"] == 2
    a = load_file(str(checkpoint_dirs(full)[-1] / "trainable.safetensors"))
    b = load_file(str(checkpoint_dirs(broken)[-1] / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log_a = [json.loads(x) for x in (full / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (broken / "train_log.jsonl").read_text().splitlines()]
    assert log_a == log_b


def test_trained_reference_variant_saves_and_loads_its_unet(tmp_path):
    from methods.ezigen import EZIGenMethod

    out = tmp_path / "ref"
    components = build_preset("tiny")
    train(smoke(out, method="ezigen-ref-trained-t1", max_steps=2, batch_size=1), components=components)
    assert (out / "reference_unet.safetensors").exists()
    ref = load_file(str(out / "reference_unet.safetensors"))
    base = unet_base_state(build_preset("tiny").unet)
    assert ref.keys() == base.keys()
    changed = [k for k in base if not torch.equal(ref[k], base[k])]
    assert changed and all(k.split(".")[0] in ("down_blocks", "mid_block", "up_blocks", "conv_in", "time_embedding")
                           for k in changed)
    assert all(torch.equal(v, base[k]) for k, v in unet_base_state(components.unet).items())  # main UNet frozen
    spec = LoadSpec(preset="tiny", adapter=str(out), resolution=R, num_inference_steps=4)
    method = EZIGenMethod(spec, name="ezigen-ref-trained-t1", reference_trained=True, iterative=False)
    loaded = method.reference.unet.state_dict()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)


def test_method_choice_errors(tmp_path):
    with pytest.raises(BenchError, match="train it with --method ezigen"):
        train(smoke(tmp_path / "a", method="ezigen-allstep", max_steps=1))
    with pytest.raises(BenchError, match="unknown method"):
        train(smoke(tmp_path / "b", method="ezigne", max_steps=1))
    with pytest.raises(BenchError, match="no checkpoint"):
        train(smoke(tmp_path / "c", max_steps=1, resume=True))


def test_cli_smoke_then_generate(tmp_path):
    from bench.cli import main
    from methods.ezigen import EZIGenMethod

    out = tmp_path / "cli"
    assert main(["train", "--preset", "smoke", "--max-steps", "2", "--pairs", "8", "--resolution", str(R),
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert (out / "adapter.safetensors").exists()
    assert main(["train", "--out", str(tmp_path / "x")]) == 2            # no data: one-line error
    spec = LoadSpec(preset="tiny", adapter=str(out), resolution=R, num_inference_steps=3)
    method = EZIGenMethod(spec, name="ezigen", iterative=False)
    subject = tmp_path / "subject.png"
    from PIL import Image
    Image.new("RGB", (R, R), (200, 30, 30)).save(subject)
    image = method.generate([GenRequest("k", "a photo of a object", "object", (subject,), seed=1)])[0]
    assert image.size == (R, R)
