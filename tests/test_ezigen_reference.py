"""EZIGen reference encoder: what it captures, that it runs once per subject, and its cache key."""

import copy
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bench.models import build_preset
from bench.types import GenRequest
from methods.common import StableDiffusionParts, load_image_tensor
from methods.ezigen.adapter import attach_adapter, transformer_block_names
from methods.ezigen.reference import ReferenceEncoder, capture_norm1, noise_seed


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subjects")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = folder / f"s{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    copy_path = folder / "same_bytes_as_s0.png"
    shutil.copy(paths[0], copy_path)
    return paths + [copy_path]


@pytest.fixture(scope="module")
def parts():
    return StableDiffusionParts(build_preset("tiny"))


def _request(path, seed=0, run_seed=0, noun="dog"):
    return GenRequest(key=f"{path.name}/{seed}/{run_seed}", prompt="a dog", class_noun=noun,
                      subject_images=(path,), seed=seed, run_seed=run_seed)


def test_features_are_norm1_outputs_of_the_noised_subject(parts, subjects):
    unet = parts.components.unet
    names = transformer_block_names(unet)
    encoder = ReferenceEncoder(parts, unet, names, timestep=1)
    (features,), = encoder.features([_request(subjects[0], run_seed=3)])
    assert [f.shape for f in features] == [(64, 32), (16, 64), (4, 64), (16, 64), (16, 64), (64, 32), (64, 32)]
    # Recompute by hand: VAE mean latent x scaling, DDPM add_noise at t=1 with the seeded noise.
    clean = parts.encode(load_image_tensor(subjects[0], 64)[None])
    digest = encoder.subject_keys(_request(subjects[0], run_seed=3))[0][0]
    noise = torch.randn(clean.shape[1:], generator=torch.Generator().manual_seed(noise_seed("run", 3, digest)))
    scheduler = parts.components.make_scheduler()
    noisy = scheduler.add_noise(clean, noise[None], torch.tensor([1]))
    text = parts.encode_text(["a photo of a dog."])
    with torch.no_grad(), capture_norm1(unet, names) as captured:
        unet(noisy, torch.tensor([1]), encoder_hidden_states=text)
    for name, f in zip(names, features):
        torch.testing.assert_close(f, captured[name][0][0], rtol=0, atol=0)


def test_reference_pass_ignores_an_attached_adapter(subjects):
    components = build_preset("tiny")
    plain = StableDiffusionParts(copy.deepcopy(components))
    names = transformer_block_names(components.unet)
    expected = ReferenceEncoder(plain, plain.components.unet, names).features([_request(subjects[1])])[0][0]
    parts = StableDiffusionParts(components)
    adapter = attach_adapter(components.unet)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(1.0)            # an adapter that would change everything if it ran
    got = ReferenceEncoder(parts, components.unet, names).features([_request(subjects[1])])[0][0]
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_runs_once_per_subject_and_seed(parts, subjects):
    encoder = ReferenceEncoder(parts, parts.components.unet, transformer_block_names(parts.components.unet))
    batch = [_request(subjects[i % 2], seed=i) for i in range(4)]
    first = encoder.features(batch)
    assert encoder.forward_passes == 2
    again = encoder.features(batch[::-1])
    assert encoder.forward_passes == 2
    assert torch.equal(first[0][0][0], again[3][0][0])
    encoder.features([_request(subjects[2])])          # same bytes as subjects[0], other path
    assert encoder.forward_passes == 2
    encoder.features([_request(subjects[0], run_seed=1)])  # another protocol seed: new noise
    assert encoder.forward_passes == 3
    encoder.features([_request(subjects[0], noun="cat")])  # another class noun: other text
    assert encoder.forward_passes == 4
    other_seed = encoder.features([_request(subjects[0], run_seed=1)])[0][0]
    assert not torch.equal(other_seed[0], first[0][0][0])


def test_feature_cache_is_bounded_and_keeps_the_current_batch(parts, subjects):
    encoder = ReferenceEncoder(parts, parts.components.unet, transformer_block_names(parts.components.unet), cache_size=1)
    both = [_request(subjects[0]), _request(subjects[1])]
    first = encoder.features(both)                     # a batch larger than the cache stays whole
    assert encoder.forward_passes == 2 and len(encoder._features) == 2
    encoder.features(both[1:])                         # a hit: no pass
    assert encoder.forward_passes == 2
    encoder.features([_request(subjects[1], run_seed=1)])   # an insert evicts down to the bound
    assert encoder.forward_passes == 3 and len(encoder._features) == 1
    assert not encoder.is_cached(both[0]) and not encoder.is_cached(both[1])
    again = encoder.features(both[:1])                 # recomputed, identically
    assert encoder.forward_passes == 4
    assert all(torch.equal(a, b) for a, b in zip(again[0][0], first[0][0]))


def test_request_seed_policy_and_adaptive_timestep(parts, subjects):
    names = transformer_block_names(parts.components.unet)
    per_request = ReferenceEncoder(parts, parts.components.unet, names, seed_policy="request")
    per_request.features([_request(subjects[0], seed=s) for s in range(3)])
    assert per_request.forward_passes == 3
    adaptive = ReferenceEncoder(parts, parts.components.unet, names, timestep="adaptive")
    batch = [_request(subjects[0], seed=0), _request(subjects[0], seed=1), _request(subjects[1])]
    at_500 = adaptive.features(batch, timestep=500)
    assert adaptive.forward_passes == 2                  # distinct subjects in the batch
    at_100 = adaptive.features(batch, timestep=100)
    assert adaptive.forward_passes == 4                  # recomputed at every main-UNet step
    assert not torch.equal(at_500[0][0][0], at_100[0][0][0])
    fixed_500 = ReferenceEncoder(parts, parts.components.unet, names, timestep=500).features(batch[:1])
    torch.testing.assert_close(at_500[0][0][0], fixed_500[0][0][0])
    with pytest.raises(ValueError):
        adaptive.features(batch)
