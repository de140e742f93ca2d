"""BLIP-Diffusion baseline (methods/blip_diffusion.py) on a tiny random BLIP-Diffusion set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tolerance import assert_images_close
import pytest
import torch

from bench import BenchError
from bench.types import GenRequest, LoadSpec

DOG = sorted(Path("datasets/mini-dreambench/dataset/dog").glob("*.jpg"))
VASE = sorted(Path("datasets/mini-dreambench/dataset/vase").glob("*.jpg"))
STEPS = 3


def request(key="k", prompt="a dog on the beach", noun="dog", image=DOG[0], seed=0) -> GenRequest:
    return GenRequest(key=key, prompt=prompt, class_noun=noun, subject_images=(image,), seed=seed)


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def method():
    from methods.blip_diffusion import BlipDiffusionMethod
    return BlipDiffusionMethod(LoadSpec(preset="tiny", resolution=64, num_inference_steps=STEPS))


def test_matches_the_pipeline_call(method):
    """Our loop is BlipDiffusionPipeline.__call__ given the same initial noise."""
    from bench.images import load_rgb
    from methods.common import randn_per_request, request_generators

    ours = method.generate([request(seed=5)])[0]
    latents = randn_per_request(request_generators([5]), method.latent_shape, "cpu", torch.float32)
    reference = method.pipe(["on the beach"], load_rgb(DOG[0]), ["dog"], ["dog"], latents=latents,
                            guidance_scale=7.5, num_inference_steps=STEPS, neg_prompt=method.negative_prompt,
                            height=64, width=64).images[0]
    assert ours.tobytes() == reference.tobytes()


def test_output_depends_on_the_reference_image_and_the_subject(method):
    dog, vase, as_cat = method.generate([request(image=DOG[0]), request(image=VASE[0]),
                                         request(prompt="a cat on the beach", noun="cat")])
    assert np.abs(pixels(dog) - pixels(vase)).mean() > 0.5
    assert np.abs(pixels(dog) - pixels(as_cat)).mean() > 0.5


def test_same_request_same_bytes_and_batch_independent_noise(method):
    batch = [request("a", seed=1), request("b", prompt="a dog in the jungle", seed=2)]
    first, again = method.generate(batch), method.generate(batch)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    alone = method.generate(batch[:1])[0]
    # another batch composition: other matrix shapes, so bounded, not bit-equal
    assert_images_close(pixels(alone), pixels(first[0]), "batch of 1 vs 2")


def test_prompt_context_drops_the_leading_subject():
    from methods.blip_diffusion import subject_context

    assert subject_context("a dog in the jungle", "dog") == "in the jungle"
    assert subject_context("A Dog", "dog") == ""
    assert subject_context("an apple on a table", "apple") == "on a table"
    assert subject_context("a red backpack", "backpack") == "a red backpack"     # template without the prefix
    assert subject_context("a doghouse", "dog") == "a doghouse"


def test_qformer_shim_keeps_weight_names(method):
    """The transformers 5 patch changes calls, not modules: state-dict keys stay those of the
    released checkpoint (encoder.layer.N.attention.attention.query.weight, ...)."""
    keys = set(method.pipe.qformer.state_dict())
    assert "encoder.layer.0.attention.attention.query.weight" in keys
    assert "encoder.layer.0.crossattention.output.dense.weight" in keys
    assert not any(".forward" in k for k in keys)


def test_describe_names_the_base_model(method):
    d = method.describe()
    assert d["model"]["base_model"] == "Salesforce/blipdiffusion"
    assert d["model"]["model_id"] == "preset:tiny" and d["weights_status"] == "random weights"
    assert d["params"]["num_inference_steps"] == STEPS and d["params"]["guidance_scale"] == 7.5
    assert d["params"]["negative_prompt"].startswith("over-exposure, under-exposure")


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    from methods.blip_diffusion import load_blip_diffusion

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BenchError) as err:
        load_blip_diffusion("Salesforce/blipdiffusion", "cpu", "fp32")
    assert "Salesforce/blipdiffusion" in str(err.value) and "hf download" in str(err.value)
    with pytest.raises(BenchError, match="model_index.json"):
        load_blip_diffusion(str(tmp_path), "cpu", "fp32")


def test_no_random_sd21_preset():
    from methods.blip_diffusion import BlipDiffusionMethod

    with pytest.raises(BenchError, match="smoke or tiny"):
        BlipDiffusionMethod(LoadSpec(preset="sd21-random"))
