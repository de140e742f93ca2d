"""EZIGen checkpoints: our safetensors format, the official accelerate folder, strict refusal."""

import copy
import pickle

import pytest
import torch
from safetensors.torch import save_file

from bench import BenchError
from bench.models import build_preset
from bench.types import LoadSpec
from methods.ezigen import EZIGenMethod
from methods.ezigen.adapter import EZIGenAdapter, attach_adapter
from methods.ezigen.checkpoint import (CheckpointError, load_adapter_state, read_checkpoint, save_checkpoint)


@pytest.fixture(scope="module")
def unet():
    return build_preset("tiny").unet


@pytest.fixture(scope="module")
def base_keys(unet):
    return set(unet.state_dict())


@pytest.fixture(scope="module")
def trained(unet):
    """An adapter whose weights differ from the init (as after training)."""
    adapter = EZIGenAdapter(unet)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return adapter


def _same(a, b):
    sa, sb = a.official_state_dict(), b.official_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_format_round_trips(unet, base_keys, trained, tmp_path):
    save_checkpoint(trained, tmp_path / "ckpt", metadata={"step": 10})
    fresh = EZIGenAdapter(unet)
    assert not _same(fresh, trained)
    ckpt = read_checkpoint(tmp_path / "ckpt", base_keys)
    load_adapter_state(fresh, ckpt.adapter_state)
    assert _same(fresh, trained)
    assert ckpt.reference_state is None and len(ckpt.sha256) == 64


def _official_state(unet, adapter, prefix=""):
    """What the official training saves: the UNet's weights with the adapters inside + the scalars."""
    state = {prefix + k: v.clone() for k, v in unet.state_dict().items()}
    state.update({prefix + k: v.clone() for k, v in adapter.official_state_dict().items()})
    return state


@pytest.mark.parametrize("kind", ["safetensors", "bin", "prefixed"])
def test_official_accelerate_folder_round_trips(unet, base_keys, trained, tmp_path, kind):
    folder = tmp_path / "checkpoint-1000"
    folder.mkdir()
    state = _official_state(unet, trained, prefix="module." if kind == "prefixed" else "")
    if kind == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, str(folder / "model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.bin")
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps({"not": "read"}))
    ckpt = read_checkpoint(folder, base_keys)
    fresh = EZIGenAdapter(unet)
    load_adapter_state(fresh, ckpt.adapter_state, folder)
    assert _same(fresh, trained)
    assert ckpt.ignored_base_keys == len(base_keys)
    assert [p.name for p in ckpt.files] == ["pytorch_model.bin" if kind == "bin" else "model.safetensors"]


def test_official_key_names(trained):
    keys = set(trained.official_state_dict())
    assert "learnable_weights" in keys
    assert "down_blocks.0.attentions.0.transformer_blocks.0.adapter.to_q.weight" in keys
    assert "mid_block.attentions.0.transformer_blocks.0.adapter.to_out.0.weight" in keys
    assert "up_blocks.2.attentions.1.transformer_blocks.0.adapter_norm.bias" in keys
    assert len(keys) == 1 + 7 * (4 + 1 + 2)    # q, k, v, out.weight, out.bias, norm w/b per block


def test_our_unet_naming_is_accepted(unet, base_keys, trained, tmp_path):
    """A UNet state dict with the adapter attached (…fuser.adapter…) loads too."""
    host = copy.deepcopy(unet)
    attach_adapter(host, copy.deepcopy(trained))
    state = dict(host.state_dict())
    state["learnable_weights"] = trained.learnable_weights.detach().clone()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    fresh = EZIGenAdapter(unet)
    load_adapter_state(fresh, read_checkpoint(tmp_path, base_keys).adapter_state)
    assert _same(fresh, trained)


@pytest.mark.parametrize("damage", ["missing", "misshaped", "unexpected", "weights_count"])
def test_damaged_checkpoint_is_refused_and_nothing_loads(unet, base_keys, trained, tmp_path, damage):
    state = _official_state(unet, trained)
    victim = "up_blocks.1.attentions.0.transformer_blocks.0.adapter.to_k.weight"
    if damage == "missing":
        del state[victim]
    elif damage == "misshaped":
        state[victim] = state[victim][:, :-1].contiguous()
    elif damage == "unexpected":
        state["up_blocks.1.attentions.0.transformer_blocks.0.adapter.to_z.weight"] = torch.zeros(2)
    else:
        state["learnable_weights"] = torch.ones(16)
    save_file(state, str(tmp_path / "model.safetensors"))
    fresh = EZIGenAdapter(unet)
    before = {k: v.clone() for k, v in fresh.official_state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_adapter_state(fresh, read_checkpoint(tmp_path, base_keys).adapter_state, tmp_path)
    message = str(info.value)
    assert {"missing": "1 missing", "misshaped": "1 misshaped", "unexpected": "unexpected",
            "weights_count": "learnable_weights (16,) != (7,)"}[damage] in message
    assert isinstance(info.value, BenchError)
    after = fresh.official_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pickled_objects_are_never_unpickled(base_keys, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"learnable_weights": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path, base_keys)


def test_reference_unet_weights_in_a_second_file(unet, base_keys, trained, tmp_path):
    reference = copy.deepcopy(unet)
    with torch.no_grad():
        reference.conv_in.weight.add_(1.0)
    save_file(trained.official_state_dict(), str(tmp_path / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model_1.safetensors"))
    ckpt = read_checkpoint(tmp_path, base_keys)
    assert ckpt.reference_state is not None
    assert torch.equal(ckpt.reference_state["conv_in.weight"], reference.conv_in.weight)
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter=str(tmp_path), num_inference_steps=4),
                          reference_trained=True, iterative=False)
    assert method.reference.unet is not method.components.unet
    assert torch.equal(method.reference.unet.conv_in.weight, reference.conv_in.weight)
    described = method.describe()
    assert described["weights_status"] == "random weights, trained adapter"
    assert described["adapter"]["sha256"] == ckpt.sha256
    assert _same(method.adapter, trained)


def test_init_adapter_is_stamped_untrained():
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=4), iterative=False)
    described = method.describe()
    assert described["adapter"] == {"source": "init", "sha256": None}
    assert described["weights_status"] == "random weights, untrained adapter"
    assert method.reference.unet is method.components.unet      # frozen reference: shared weights
