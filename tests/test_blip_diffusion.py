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


# ---- the context text encoder is causal (transformers 5 drops the mask diffusers passes) ------
def _encode(text_encoder, ids, ctx):
    with torch.no_grad():
        return text_encoder(ctx_embeddings=ctx, ctx_begin_pos=[2] * ids.shape[0], input_ids=ids)[0]


def _prompt_ids(pipe, texts):
    cfg = pipe.text_encoder.text_model.config
    return pipe.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                          max_length=cfg.max_position_embeddings - pipe.qformer.config.num_query_tokens).input_ids


def test_text_encoder_is_causal_as_the_method_builds_it(method):
    """Changing a later token never changes an earlier position's output (and does change its own)."""
    pipe = method.pipe
    ids = _prompt_ids(pipe, ["a dog on the beach at sunset"])
    ctx = torch.randn(1, pipe.qformer.config.num_query_tokens, pipe.text_encoder.config.hidden_size,
                      generator=torch.Generator().manual_seed(0))
    base = _encode(pipe.text_encoder, ids, ctx)
    nq = ctx.shape[1]
    for token in (3, 6):                              # positions in the prompt (after the ctx tokens)
        changed = ids.clone()
        changed[0, token] = 1000
        out = _encode(pipe.text_encoder, changed, ctx)
        position = token + nq                         # the ctx tokens are inserted at 2, before it
        assert torch.equal(out[:, :position], base[:, :position]), token
        assert (out[:, position] - base[:, position]).abs().max() > 1e-3


def test_the_unpatched_encoder_is_not_causal_under_transformers_5():
    """The bug the fix repairs: diffusers' ContextCLIPTextModel alone leaks later tokens
    (transformers 5); on transformers 4 it is causal and the fix is a no-op."""
    import transformers
    from methods.blip_diffusion import make_text_encoder_causal
    from methods.tiny_baselines import tiny_blip_diffusion

    pipe = tiny_blip_diffusion()
    ids = _prompt_ids(pipe, ["a dog on the beach"])
    changed = ids.clone()
    changed[0, 5] = 1000
    leak = (_encode(pipe.text_encoder, ids, None)[:, :5] - _encode(pipe.text_encoder, changed, None)[:, :5]).abs().max()
    patched = make_text_encoder_causal(pipe.text_encoder)
    after = (_encode(pipe.text_encoder, ids, None)[:, :5] - _encode(pipe.text_encoder, changed, None)[:, :5]).abs().max()
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert patched and leak > 1e-3
    assert after == 0
    assert make_text_encoder_causal(pipe.text_encoder) == patched          # idempotent


class IndependentCausalTextEncoder(torch.nn.Module):
    """BLIP-Diffusion's context text encoder written out from its weights: token embeddings with
    the subject (context) embeddings inserted at ctx_begin_pos, positions over the whole
    sequence, pre-LN CLIP blocks with a lower-triangular (causal) attention mask, final norm."""

    def __init__(self, model):
        super().__init__()
        self.w = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.cfg = model.config
        self.text_model = type("TextModel", (), {"config": model.text_model.config})()

    device = torch.device("cpu")                     # what the pipeline asks of its components
    dtype = torch.float32

    def forward(self, input_ids, ctx_embeddings=None, ctx_begin_pos=None, **_):
        import torch.nn.functional as F
        w, cfg, p = self.w, self.cfg, "text_model."
        x = F.embedding(input_ids, w[p + "embeddings.token_embedding.weight"])
        if ctx_embeddings is not None:
            x = torch.stack([torch.cat([x[i, :b], ctx_embeddings[i], x[i, b:]]) for i, b in enumerate(ctx_begin_pos)])
        batch, length, width = x.shape
        x = x + w[p + "embeddings.position_embedding.weight"][:length]
        heads = cfg.num_attention_heads
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        act = (lambda h: h * torch.sigmoid(1.702 * h)) if cfg.hidden_act == "quick_gelu" else F.gelu

        def norm(h, name, eps=cfg.layer_norm_eps):
            return F.layer_norm(h, (width,), w[name + ".weight"], w[name + ".bias"], eps)

        def linear(h, name):
            return F.linear(h, w[name + ".weight"], w[name + ".bias"])

        for n in range(cfg.num_hidden_layers):
            q = f"{p}encoder.layers.{n}."
            h = norm(x, q + "layer_norm1")
            split = [linear(h, q + f"self_attn.{k}_proj").view(batch, length, heads, -1).transpose(1, 2)
                     for k in "qkv"]
            scores = split[0] @ split[1].transpose(-1, -2) / split[0].shape[-1] ** 0.5
            attended = scores.masked_fill(future, float("-inf")).softmax(-1) @ split[2]
            x = x + linear(attended.transpose(1, 2).reshape(batch, length, width), q + "self_attn.out_proj")
            x = x + linear(act(linear(norm(x, q + "layer_norm2"), q + "mlp.fc1")), q + "mlp.fc2")
        return (norm(x, p + "final_layer_norm", 1e-5),)


def test_images_equal_the_pipeline_with_an_independent_causal_encoder(method):
    """The method's images = diffusers' own __call__ with the text encoder replaced by an
    independent causal statement of it (same weights, same initial noise)."""
    from bench.images import load_rgb
    from methods.blip_diffusion import make_qformer_compatible
    from methods.common import randn_per_request, request_generators
    from methods.tiny_baselines import tiny_blip_diffusion

    pipe = tiny_blip_diffusion()                      # the same seeded weights, no text-encoder fix
    make_qformer_compatible(pipe.qformer)
    pipe.set_progress_bar_config(disable=True)
    unfixed = pipe.text_encoder
    independent = IndependentCausalTextEncoder(unfixed)
    ids = _prompt_ids(pipe, ["a dog on the beach"])
    ctx = torch.randn(1, pipe.qformer.config.num_query_tokens, 32, generator=torch.Generator().manual_seed(1))
    theirs, ours = _encode(independent, ids, ctx), _encode(method.pipe.text_encoder, ids, ctx)
    assert (theirs - ours).abs().max() < 1e-5
    assert (_encode(unfixed, ids, ctx) - ours).abs().max() > 1e-2          # the fix matters here

    def call(text_encoder, seed):
        pipe.text_encoder = text_encoder
        latents = randn_per_request(request_generators([seed]), method.latent_shape, "cpu", torch.float32)
        return pipe(["on the beach"], load_rgb(DOG[0]), ["dog"], ["dog"], latents=latents, guidance_scale=7.5,
                    num_inference_steps=STEPS, neg_prompt=method.negative_prompt, height=64, width=64).images[0]

    for seed in (5, 6):
        image = method.generate([request(seed=seed)])[0]
        assert_images_close(pixels(image), pixels(call(independent, seed)), f"seed {seed}")
    broken = call(unfixed, 5)
    assert np.abs(pixels(method.generate([request(seed=5)])[0]) - pixels(broken)).max() > 8


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    """The tiny pipeline saved as a pipeline folder, its model_index.json naming the components'
    library ``blip_diffusion`` as the released Salesforce/blipdiffusion folder does."""
    import json
    from methods.tiny_baselines import tiny_blip_diffusion

    folder = tmp_path_factory.mktemp("blip") / "pipeline"
    tiny_blip_diffusion().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    for name in ("text_encoder", "qformer", "image_processor"):
        index[name] = ["blip_diffusion", index[name][1]]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_a_pipeline_folder_loads_through_the_loader_causal_and_equal_to_the_preset(method, saved_folder):
    from methods.blip_diffusion import BlipDiffusionMethod

    loaded = BlipDiffusionMethod(LoadSpec(weights=str(saved_folder), resolution=64, num_inference_steps=STEPS))
    assert loaded.model_id == str(saved_folder) and not loaded.random_weights
    pipe = loaded.pipe
    ids = _prompt_ids(pipe, ["a dog on the beach at sunset"])
    changed = ids.clone()
    changed[0, 4] = 1000
    a, b = _encode(pipe.text_encoder, ids, None), _encode(pipe.text_encoder, changed, None)
    assert torch.equal(a[:, :4], b[:, :4]) and (a[:, 4] - b[:, 4]).abs().max() > 1e-3
    assert_images_close(pixels(loaded.generate([request(seed=5)])[0]), pixels(method.generate([request(seed=5)])[0]),
                        "folder vs preset")
