"""IP-Adapter baseline (methods/ip_adapter.py) on the tiny preset: tiny random adapter files in
IP-Adapter's own format, loaded through diffusers' load_ip_adapter."""

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


def spec(**kw) -> LoadSpec:
    return LoadSpec(preset="tiny", resolution=64, num_inference_steps=STEPS, **kw)


def request(key="k", prompt="a dog on the beach", images=(DOG[0],), seed=0) -> GenRequest:
    return GenRequest(key=key, prompt=prompt, class_noun="dog", subject_images=tuple(images), seed=seed)


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def method():
    from methods.ip_adapter import IPAdapterMethod
    return IPAdapterMethod(spec(), variant="sd15", scale=1.0)


@pytest.fixture(scope="module")
def plus():
    from methods.ip_adapter import IPAdapterMethod
    return IPAdapterMethod(spec(), name="ip-adapter-plus-sd15", variant="plus", scale=1.0)


def test_loaded_through_diffusers_in_the_released_format(method, plus):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

    for m, kind, tokens in ((method, ImageProjection, 4), (plus, IPAdapterPlusImageProjection, 16)):
        unet = m.pipe.unet
        assert unet.config.encoder_hid_dim_type == "ip_image_proj"
        assert isinstance(unet.encoder_hid_proj.image_projection_layers[0], kind)
        cross = [p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor")]
        assert cross and all(isinstance(p, IPAdapterAttnProcessor2_0) for p in cross)
        assert all(p.num_tokens == [tokens] and p.scale == [1.0] for p in cross)


def test_scale_zero_is_plain_stable_diffusion(tiny_components):
    """With the adapter at scale 0 the image is plain SD's (the same pipeline without any
    IP-Adapter, the same DDIM scheduler, text embeddings and initial noise)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from bench.models import build_preset
    from methods.common import randn_per_request, request_generators
    from methods.ip_adapter import DDIM_CONFIG, IPAdapterMethod

    zero = IPAdapterMethod(spec(), scale=0.0)
    ours = zero.generate([request(seed=7)])[0]

    base = build_preset("tiny")
    cfg = base.scheduler_config
    scheduler = DDIMScheduler(num_train_timesteps=cfg["num_train_timesteps"], beta_start=cfg["beta_start"],
                              beta_end=cfg["beta_end"], beta_schedule=cfg["beta_schedule"], **DDIM_CONFIG)
    plain = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                    unet=base.unet, scheduler=scheduler, safety_checker=None,
                                    feature_extractor=None, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    base.vae.enable_slicing()
    latents = randn_per_request(request_generators([7]), (4, 8, 8), "cpu", torch.float32)
    reference = plain(prompt="a dog on the beach", negative_prompt=zero.negative_prompt, latents=latents,
                      num_inference_steps=STEPS, guidance_scale=7.5, height=64, width=64).images[0]
    diff = np.abs(pixels(ours) - pixels(reference))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


@pytest.mark.parametrize("variant", ["sd15", "plus"])
def test_matches_the_pipeline_call_at_batch_one(method, plus, variant):
    """Our loop is StableDiffusionPipeline.__call__ with ip_adapter_image_embeds (which repeats
    one set of embeddings over a batch, hence our own loop for batches of different subjects)."""
    from methods.common import randn_per_request, request_generators

    m = method if variant == "sd15" else plus
    ours = m.generate([request(seed=3)])[0]
    pos, neg = m._image_embeds(DOG[0])
    latents = randn_per_request(request_generators([3]), m.sd.latent_shape, "cpu", torch.float32)
    reference = m.pipe(prompt="a dog on the beach", negative_prompt=m.negative_prompt, latents=latents,
                       ip_adapter_image_embeds=[torch.stack([neg[None], pos[None]])],
                       num_inference_steps=STEPS, guidance_scale=7.5, height=64, width=64).images[0]
    diff = np.abs(pixels(ours) - pixels(reference))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


@pytest.mark.parametrize("variant", ["sd15", "plus"])
def test_subject_image_changes_the_output(method, plus, variant):
    m = method if variant == "sd15" else plus
    dog, vase = m.generate([request(images=(DOG[0],)), request(images=(VASE[0],))])
    assert np.abs(pixels(dog) - pixels(vase)).mean() > 1.0


def test_same_request_same_bytes_and_batch_independent_noise(method):
    first = method.generate([request("a", seed=1), request("b", seed=2)])
    again = method.generate([request("a", seed=1), request("b", seed=2)])
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    assert first[0].tobytes() != first[1].tobytes()          # each request has its own noise
    alone = method.generate([request("a", seed=1)])[0]
    # another batch composition: other matrix shapes, so bounded, not bit-equal (measured: <= 1)
    assert_images_close(pixels(alone), pixels(first[0]), "batch of 1 vs 2")


def test_several_subject_images_use_the_num_images_axis(method):
    one, two = method.generate([request(images=DOG[:1]), request(images=DOG[:2])])
    assert one.size == two.size == (64, 64)
    assert np.abs(pixels(one) - pixels(two)).mean() > 0.5


def test_describe_names_the_base_model_and_adapter(plus):
    d = plus.describe()
    assert d["model"]["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert d["model"]["model_id"] == "preset:tiny" and d["model"]["random_weights"] is True
    assert d["adapter"]["weight_name"] == "models/ip-adapter-plus_sd15.bin" and len(d["adapter"]["sha256"]) == 16
    assert d["params"]["scale"] == 1.0 and d["params"]["variant"] == "plus"
    assert "random" in d["weights_status"]


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    from methods.ip_adapter import resolve_ip_adapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BenchError) as err:
        resolve_ip_adapter(None, "ip-adapter_sd15.bin")
    text = str(err.value)
    assert "h94/IP-Adapter" in text and "hf download" in text and "image_encoder" in text
    (tmp_path / "clone" / "models").mkdir(parents=True)
    with pytest.raises(BenchError, match="lacks models/ip-adapter-plus_sd15.bin"):
        resolve_ip_adapter(str(tmp_path / "clone"), "ip-adapter-plus_sd15.bin")


def test_registered_with_their_variants():
    from bench.registry import METHODS
    from methods.ip_adapter import IPAdapterMethod

    assert METHODS.get("ip-adapter-sd15").params == {"variant": "sd15"}
    assert METHODS.get("ip-adapter-plus-sd15").params == {"variant": "plus"}
    assert METHODS.get("ip-adapter-sd15").load() is IPAdapterMethod
    assert IPAdapterMethod.default_weights == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_missing_base_and_adapter_are_named_together(tmp_path, monkeypatch):
    from methods.ip_adapter import IPAdapterMethod

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BenchError) as err:
        IPAdapterMethod(LoadSpec(weights="stable-diffusion-v1-5/stable-diffusion-v1-5"), variant="plus")
    text = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in text and "h94/IP-Adapter" in text
    assert "ip-adapter-plus_sd15.bin" in text and text.count("hf download") == 2
