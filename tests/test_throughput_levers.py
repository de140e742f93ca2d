"""Throughput levers keep the images: the subject key/value cache of the EZIGen adapter.

The cache projects the subject rows once per SubjectTokens object instead of at every UNet
call. Cached and uncached runs of the *same* split computation are bit-equal; the split
computation against the original concatenated projection differs only in the order of float
sums inside the matrix product, bounded below by a measured tolerance.
"""

import copy

import numpy as np
from tolerance import assert_images_close
import pytest
import torch
from PIL import Image

from bench.models import build_preset
from bench.types import GenRequest, LoadSpec
from methods.ezigen import EZIGenMethod
from methods.ezigen.adapter import adapter_kwargs, attach_adapter
from methods.ezigen.reference import capture_norm1


@pytest.fixture(scope="module")
def unet_and_adapter():
    unet = copy.deepcopy(build_preset("tiny").unet)
    return unet, attach_adapter(unet)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500, 500]), torch.randn(2, 77, 32, generator=g)


def _tokens(adapter, unet, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), capture_norm1(unet, adapter.block_names) as captured:
        unet(torch.zeros(1, 4, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.zeros(1, 77, 32))
    shapes = [captured[n][0].shape[1:] for n in adapter.block_names]
    return adapter.tokens([[[torch.randn(s, generator=g) for s in shapes]] for _ in range(batch)])


def _run(unet, inputs, tokens):
    latents, t, text = inputs
    with torch.no_grad():
        return unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(tokens)).sample


@pytest.fixture
def cache_switch(unet_and_adapter):
    _, adapter = unet_and_adapter
    yield adapter
    adapter.cache_subject_kv = True


def test_cached_projection_is_computed_once_and_matches_concatenation(unet_and_adapter, inputs, cache_switch):
    unet, adapter = unet_and_adapter
    rows = []
    original = type(adapter.blocks[0].adapter).project_kv

    def counting(self, tokens):
        rows.append(tokens.shape[0] * tokens.shape[1])
        return original(self, tokens)

    tokens = _tokens(adapter, unet)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(adapter.blocks[0].adapter), "project_kv", counting)
        cached = [_run(unet, inputs, tokens) for _ in range(3)]
        cached_rows, rows[:] = sum(rows), []
        adapter.cache_subject_kv = False
        plain = [_run(unet, inputs, tokens) for _ in range(3)]
        plain_rows = sum(rows)
    assert len(tokens._subject_kv) == len(adapter.blocks)
    subject_rows = sum(f.shape[0] * f.shape[1] for f in tokens.features)
    main_rows = plain_rows // 3 - subject_rows
    assert cached_rows == 3 * main_rows + subject_rows          # subject rows projected once, not 3 times
    assert torch.equal(cached[0], cached[1]) and torch.equal(cached[0], cached[2])
    # Same maths, another split of the matrix product: float rounding only (measured: bit-equal
    # on an AVX2 CPU, also with ATEN_CPU_CAPABILITY=default and MKL SSE4.2 kernels).
    torch.testing.assert_close(cached[0], plain[0], rtol=1e-5, atol=1e-5)


def test_in_place_changes_invalidate_the_cache(unet_and_adapter, inputs):
    unet, adapter = unet_and_adapter
    tokens = _tokens(adapter, unet, seed=2)
    before = _run(unet, inputs, tokens)
    for f in tokens.features:
        f.mul_(2.0)
    fresh = _tokens(adapter, unet, seed=2)
    for f in fresh.features:
        f.mul_(2.0)
    changed = _run(unet, inputs, tokens)
    assert not torch.allclose(before, changed, atol=1e-4)
    assert torch.equal(changed, _run(unet, inputs, fresh))      # same computation: bit-equal
    block = adapter.blocks[0].adapter
    saved = block.to_v.weight.detach().clone()
    try:
        with torch.no_grad():
            block.to_v.weight.mul_(0.5)
        after_weights = _run(unet, inputs, tokens)
        assert torch.equal(after_weights, _run(unet, inputs, _with_doubled(adapter, unet)))
        assert not torch.equal(after_weights, changed)
    finally:
        with torch.no_grad():
            block.to_v.weight.copy_(saved)


def _with_doubled(adapter, unet):
    tokens = _tokens(adapter, unet, seed=2)
    for f in tokens.features:
        f.mul_(2.0)
    return tokens


def test_no_cache_while_training(unet_and_adapter, inputs):
    unet, adapter = unet_and_adapter
    tokens = _tokens(adapter, unet, seed=3)
    latents, t, text = inputs
    out = unet(latents, t, encoder_hidden_states=text, **adapter_kwargs(tokens)).sample
    assert tokens._subject_kv == {}
    out.square().mean().backward()
    assert adapter.learnable_weights.grad is not None and adapter.learnable_weights.grad.abs().sum() > 0
    adapter.zero_grad(set_to_none=True)


def test_images_with_and_without_the_cache(tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"s{i}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    requests = [GenRequest(key=f"k{i}", prompt="a dog on the beach", class_noun="dog",
                           subject_images=(paths[i],), seed=10 + i, run_seed=0) for i in range(2)]
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=5), max_loops=3)
    cached = method.generate(requests)
    again = method.generate(requests)
    method.adapter.cache_subject_kv = False
    plain = method.generate(requests)
    for a, b, c in zip(cached, again, plain):
        assert np.array_equal(np.asarray(a), np.asarray(b))      # the cache is deterministic
        assert_images_close(a, c, "K/V cache on vs off")          # other GEMM shapes (measured: 0 here)
        assert a.info["bench"]["unet_calls"] == c.info["bench"]["unet_calls"]
