"""EZIGen sampler: batch invariance, the decoupled schedule, loops, early drop-out, UNet-call records."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.models import SD_SCHEDULER
from bench.types import GenRequest, LoadSpec
from methods.ezigen import EZIGenMethod
from methods.ezigen.sampler import SamplerConfig

STEPS = 10          # layout 6 steps, appearance 4 steps


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subjects")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        path = folder / f"s{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _requests(subjects):
    return [GenRequest(key=f"k{i}", prompt=f"a dog {['in the jungle', 'on the beach'][i % 2]}",
                       class_noun="dog", subject_images=(subjects[i % 2],) if i != 3 else tuple(subjects[:2]),
                       seed=100 + i, run_seed=0) for i in range(4)]


def _method(**params):
    return EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), **params)


@pytest.fixture(scope="module")
def method():
    return _method()


def test_protocol_schedule_resumes_at_381():
    from diffusers import DDPMScheduler
    config = SamplerConfig()
    scheduler = DDPMScheduler.from_config(SD_SCHEDULER)
    scheduler.set_timesteps(config.num_inference_steps)
    assert config.layout_steps == 30
    assert int(scheduler.timesteps[0]) == 981 and int(scheduler.timesteps[-1]) == 1
    assert int(scheduler.timesteps[config.layout_steps]) == 381


# Across batch sizes images agree within the cross-kernel tolerance (tests/tolerance.py).
from tolerance import MEAN_TOLERANCE, PIXEL_TOLERANCE  # noqa: E402


def test_same_bytes_in_the_same_batch_and_within_tolerance_across_batch_sizes(subjects):
    requests = _requests(subjects)
    spec = LoadSpec(preset="tiny", adapter="init", num_inference_steps=5)
    batched = EZIGenMethod(spec, max_loops=3).generate(requests)
    again = EZIGenMethod(spec, max_loops=3).generate(requests)     # the identical computation: same bytes
    for b, a in zip(batched, again):
        assert np.array_equal(np.asarray(b), np.asarray(a)) and b.info["bench"] == a.info["bench"]

    single = EZIGenMethod(spec, max_loops=3)
    # a subject's reference features are computed alone (batch of one), whatever the batch: bit-equal
    mixed = single.reference.features([requests[3]])[0][0]          # subject 0 beside subject 1
    single.reference._features.clear()
    alone_features = single.reference.features([requests[0]])[0][0]
    assert all(torch.equal(x, y) for x, y in zip(mixed, alone_features))

    alone = []
    for r in requests:          # fresh caches: text and subject features computed alone too
        single.sd._text_cache.clear()
        single.reference._features.clear()
        alone.append(single.generate([r])[0])
    for b, a in zip(batched, alone):
        diff = np.abs(np.asarray(b, dtype=np.int16) - np.asarray(a, dtype=np.int16))
        assert diff.max() <= PIXEL_TOLERANCE and diff.mean() <= MEAN_TOLERANCE
        assert b.info["bench"]["loops"] == a.info["bench"]["loops"]
    distinct = np.abs(np.asarray(batched[0], dtype=np.int16) - np.asarray(batched[1], dtype=np.int16))
    assert distinct.mean() > 20 * MEAN_TOLERANCE                   # the bound can tell images apart


def test_records_loops_and_unet_calls(method, subjects):
    images = method.generate(_requests(subjects))
    for request, image in zip(_requests(subjects), images):
        facts = image.info["bench"]
        assert 3 <= facts["loops"] <= 10
        assert facts["adapter"] == "untrained adapter"
        n_subject = len(request.subject_images)
        assert facts["unet_calls"] == n_subject + 2 * STEPS + facts["loops"] * 2 * 4
        assert facts["final_similarity"] is not None


def _spy_on_unet_calls(method):
    """Record (timestep, adapter on?, negative-prompt embedding) of every guided UNet call."""
    seen, original = [], method.sd.guided_noise

    def spy(latents, t, cond, uncond, guidance, **kw):
        seen.append((int(t), "cross_attention_kwargs" in kw, uncond[0].clone()))
        return original(latents, t, cond, uncond, guidance, **kw)

    method.sd.guided_noise = spy
    return seen


def test_adapter_is_off_for_layout_and_on_for_appearance(subjects):
    method = _method(iterative=False, protocol="paper")
    seen = _spy_on_unet_calls(method)
    image = method.generate(_requests(subjects)[:1])[0]
    assert [on for _, on, _ in seen] == [False] * 6 + [True] * 4
    assert image.info["bench"]["loops"] == 0 and image.info["bench"]["final_similarity"] is None
    assert image.info["bench"]["unet_calls"] == 1 + 2 * STEPS
    negative = method.sd.encode_text(["dark, blur, defocus, lack of content, dizzy."])[0]
    assert all(torch.equal(uncond, negative) for _, _, uncond in seen)

    allstep = _method(schedule="allstep", iterative="false")
    seen = _spy_on_unet_calls(allstep)
    allstep.generate(_requests(subjects)[:1])
    assert [on for _, on, _ in seen] == [True] * STEPS


def test_loops_resume_with_adapter_and_no_negative_prompt(subjects):
    method = _method(max_loops=3)
    seen = _spy_on_unet_calls(method)
    method.generate(_requests(subjects)[:1])
    timesteps = [t for t, _, _ in seen]
    assert timesteps[STEPS:] == timesteps[6:STEPS] * 3      # each loop resumes at the split step
    assert all(on for _, on, _ in seen[STEPS:])
    empty = method.sd.encode_text([""])[0]
    assert all(torch.equal(uncond, empty) for _, _, uncond in seen[STEPS:])


def test_converged_samples_leave_the_batch(subjects, monkeypatch):
    method = _method(max_loops=9)
    requests = _requests(subjects)[:3]
    # similarity per (sample, loop): sample 0 converges at loop 3, sample 1 at loop 5, sample 2 never
    script = {0: [0.999] * 10, 1: [0.5, 0.5, 0.5, 0.5, 0.995] + [0.5] * 5, 2: [0.5] * 10}
    state = {"loop": 0, "active": None}
    batch_sizes = []
    original_denoise = method.sampler._denoise

    def denoise(scheduler, latents, timesteps, adapter_from, cond, uncond, reqs, gens, calls, tokens):
        if len(timesteps) == 4:
            batch_sizes.append(len(reqs))
            state["active"] = [[q.key for q in requests].index(r.key) for r in reqs]
        return original_denoise(scheduler, latents, timesteps, adapter_from, cond, uncond, reqs, gens, calls,
                                tokens)

    def cosine(previous, current):
        state["loop"] += 1
        return torch.tensor([script[i][len(batch_sizes) - 1] for i in state["active"]])

    monkeypatch.setattr(method.sampler, "_denoise", denoise)
    monkeypatch.setattr("methods.ezigen.sampler.ImageSimilarity.cosine", staticmethod(cosine))
    images = method.generate(requests)
    loops = [im.info["bench"]["loops"] for im in images]
    assert loops == [3, 5, 9]                           # max_loops=9: the reference code's bound
    assert batch_sizes == [3, 3, 3, 2, 2, 1, 1, 1, 1]
    calls = [im.info["bench"]["unet_calls"] for im in images]
    assert calls == [1 + 2 * STEPS + n * 8 for n in loops]


def test_adaptive_reference_runs_every_adapter_step(subjects):
    method = _method(reference_timestep="adaptive", iterative=False)
    image = method.generate(_requests(subjects)[:1])[0]
    assert method.reference.forward_passes == 4
    assert image.info["bench"]["unet_calls"] == 2 * STEPS + 4


def test_fixed_reference_runs_once_per_subject_across_loops(subjects):
    method = _method(reference_timestep="100")
    method.generate(_requests(subjects))
    assert method.reference.forward_passes == 2           # two distinct subject images
    method.generate(_requests(subjects))
    assert method.reference.forward_passes == 2


def test_missing_adapter_and_bad_params_are_clear_errors():
    with pytest.raises(BenchError, match="--adapter init"):
        EZIGenMethod(LoadSpec(preset="tiny"))
    with pytest.raises(BenchError, match="iterative"):
        _method(iterative="maybe")
    with pytest.raises(BenchError, match="reference_timestep"):
        _method(reference_timestep="soon")
    with pytest.raises(BenchError, match="trained reference UNet"):
        _method(reference_trained=True)
