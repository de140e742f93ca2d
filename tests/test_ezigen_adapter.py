"""EZIGen adapter: insertion point, forward order, gating, attention invariants, masking."""

import copy

import pytest
import torch

from bench.models import build_preset
from methods.ezigen.adapter import (EZIGenAdapter, adapter_kwargs, attach_adapter,
                                    transformer_block_names)
from methods.ezigen.reference import capture_norm1


@pytest.fixture(scope="module")
def tiny():
    return build_preset("tiny")


@pytest.fixture(scope="module")
def unet_inputs(tiny):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    return latents, torch.tensor([500, 500]), text


def _random_tokens(adapter, unet, batch, seed=1, slots=1):
    """Per-block random subject features with the block's token count and width."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    shapes = {}
    with capture_norm1(unet, adapter.block_names) as captured:
        unet(torch.zeros(1, 4, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.zeros(1, 77, 32))
    for name in adapter.block_names:
        shapes[name] = captured[name][0].shape[1:]
    assert set(shapes) == set(adapter.block_names) and modules
    per_sample = [[[torch.randn(shapes[n], generator=g) for n in adapter.block_names] for _ in range(slots)]
                  for _ in range(batch)]
    return adapter.tokens(per_sample)


def test_block_names_follow_forward_order(tiny):
    order = []
    modules = dict(tiny.unet.named_modules())
    names = transformer_block_names(tiny.unet)
    handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: order.append(n)) for n in names]
    with torch.no_grad():
        tiny.unet(torch.zeros(1, 4, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.zeros(1, 77, 32))
    for h in handles:
        h.remove()
    assert order == names
    assert len(names) == 7 and names[2].startswith("mid_block")
    # named_modules() lists the mid block after the up blocks: enumeration order is wrong.
    enumerated = [n for n, m in tiny.unet.named_modules() if n in set(names)]
    assert enumerated != names


def test_sd21_has_16_blocks_with_protocol_token_counts():
    meta = build_preset("sd21-random", device="meta")
    names = transformer_block_names(meta.unet)
    with torch.no_grad(), capture_norm1(meta.unet, names) as captured:
        meta.unet(torch.zeros(1, 4, 64, 64, device="meta"), torch.tensor([1], device="meta"),
                  encoder_hidden_states=torch.zeros(1, 77, 1024, device="meta"))
    shapes = [tuple(captured[n][0].shape[1:]) for n in names]
    assert shapes == ([(4096, 320)] * 2 + [(1024, 640)] * 2 + [(256, 1280)] * 2 + [(64, 1280)]
                      + [(256, 1280)] * 3 + [(1024, 640)] * 3 + [(4096, 320)] * 3)
    adapter = EZIGenAdapter(meta.unet)
    assert adapter.learnable_weights.shape == (16,)
    keys = adapter.official_state_dict()
    assert "mid_block.attentions.0.transformer_blocks.0.adapter.to_out.0.bias" in keys
    assert "up_blocks.3.attentions.2.transformer_blocks.0.adapter_norm.weight" in keys


def test_gate_off_is_the_base_unet_bit_for_bit(tiny, unet_inputs):
    unet = copy.deepcopy(tiny.unet)
    latents, t, text = unet_inputs
    with torch.no_grad():
        base = unet(latents, t, encoder_hidden_states=text).sample
        adapter = attach_adapter(unet)
        gated_off = unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(None)).sample
        tokens = _random_tokens(adapter, unet, batch=2)
        gated_on = unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(tokens)).sample
    assert torch.equal(base, gated_off)
    assert not torch.allclose(base, gated_on, atol=1e-4)


def test_adapter_sits_after_self_attention_residual(tiny, unet_inputs):
    unet = copy.deepcopy(tiny.unet)
    adapter = attach_adapter(unet)
    name = adapter.block_names[3]
    block = dict(unet.named_modules())[name]
    seen = {}
    hooks = [block.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
             block.attn1.register_forward_hook(lambda m, a, o: seen.__setitem__("attn1", o)),
             block.fuser.register_forward_hook(lambda m, a, o: seen.update(h1=a[0], h2=o)),
             block.attn2.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("attn2_in", a[0] if a else kw["hidden_states"]), with_kwargs=True)]
    latents, t, text = unet_inputs
    tokens = _random_tokens(adapter, unet, batch=2)
    with torch.no_grad():
        unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(tokens))
        fuser = block.fuser
        a = fuser.adapter_norm(seen["h1"])
        o = fuser.attend(a, tokens.features[3], tokens.weights[3])
        expected_norm2_in = block.norm2(seen["h1"] + o + a)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen["h1"], seen["x"] + seen["attn1"], rtol=0, atol=0)
    torch.testing.assert_close(seen["h2"], seen["h1"] + o + a)
    torch.testing.assert_close(seen["attn2_in"], expected_norm2_in)


def test_duplicated_own_tokens_give_self_attention(tiny):
    unet = copy.deepcopy(tiny.unet)
    adapter = EZIGenAdapter(unet)
    modules = dict(unet.named_modules())
    g = torch.Generator().manual_seed(3)
    for index, name in enumerate(adapter.block_names):
        block, fuser = modules[name], adapter.blocks[index]
        width = block.norm1.normalized_shape[0]
        h1 = torch.randn(2, 16, width, generator=g)
        normed = block.norm1(h1)
        torch.testing.assert_close(fuser.adapter_norm(h1), normed, rtol=0, atol=0)
        with torch.no_grad():
            duplicated = fuser.attend(normed, normed, adapter.learnable_weights[index])
            self_attention = block.attn1(normed)
        torch.testing.assert_close(duplicated, self_attention, rtol=1e-5, atol=1e-5)


def test_empty_slots_are_masked_out(tiny, unet_inputs):
    unet = copy.deepcopy(tiny.unet)
    adapter = attach_adapter(unet)
    one = _random_tokens(adapter, unet, batch=1, seed=5)
    # Sample 0 has one image (its second slot empty), sample 1 has two.
    image = [f[0] for f in one.features]
    other = [f[0] * 3 + 1 for f in one.features]
    padded = adapter.tokens([[image], [image, other]])
    assert padded.slot_mask.tolist() == [[True, False], [True, True]]
    latents, t, text = unet_inputs
    with torch.no_grad():
        alone = unet(latents[:1], t[:1], encoder_hidden_states=text[:1], **adapter_kwargs(one)).sample
        batched = unet(latents[:1].repeat(2, 1, 1, 1), t, encoder_hidden_states=text[:1].repeat(2, 1, 1),
                       **adapter_kwargs(padded)).sample
        garbage = adapter.tokens([[image], [image, other]])
        for f in garbage.features:          # fill sample 0's empty slot with non-zero values
            f[0, f.shape[1] // 2:] = 7.0
        masked_garbage = unet(latents[:1].repeat(2, 1, 1, 1), t, encoder_hidden_states=text[:1].repeat(2, 1, 1),
                              **adapter_kwargs(garbage)).sample
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked_garbage[0], batched[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[1], alone[0], atol=1e-4)   # the second image counts


def test_guidance_tokens_repeat_subject_in_both_halves(tiny):
    unet = copy.deepcopy(tiny.unet)
    adapter = EZIGenAdapter(unet)
    tokens = _random_tokens(adapter, unet, batch=3)
    doubled = tokens.for_guidance()
    for f, d in zip(tokens.features, doubled.features):
        assert torch.equal(d[:3], f) and torch.equal(d[3:], f)
    sub = doubled.select([1, 4])
    assert torch.equal(sub.features[0][0], tokens.features[0][1])
    assert torch.equal(sub.features[0][1], tokens.features[0][1])


def test_trainable_parameters_receive_gradients(tiny, unet_inputs):
    unet = copy.deepcopy(tiny.unet)
    adapter = attach_adapter(unet)
    params = adapter.trainable_parameters()
    assert sum(p.numel() for p in params) == sum(v.numel() for v in adapter.official_state_dict().values())
    assert not any(p.requires_grad for p in unet.parameters() if all(p is not q for q in params))
    tokens = _random_tokens(adapter, unet, batch=2)
    latents, t, text = unet_inputs
    unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(tokens)).sample.square().mean().backward()
    assert adapter.learnable_weights.grad is not None and adapter.learnable_weights.grad.abs().sum() > 0
    assert adapter.blocks[0].adapter.to_q.weight.grad.abs().sum() > 0
