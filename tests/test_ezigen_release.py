"""protocol=release: each behaviour of the public reference code, checked against an independent
statement of it (docs/protocols.md section 1b)."""

import copy
import random

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.models import SD_SCHEDULER
from bench.types import GenRequest, LoadSpec
from methods.ezigen import EZIGenMethod
from methods.ezigen.background import BackgroundRemover
from methods.ezigen.protocol import SETTINGS
from methods.ezigen.reference import subject_tensor
from methods.ezigen.sampler import SamplerConfig

STEPS = 10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    rng = np.random.default_rng(5)
    for name, size in (("subject", (64, 64)), ("wide", (96, 64)), ("source", (64, 64))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{name}.png")
    for name, size in (("mask", (64, 64)), ("widemask", (96, 64))):
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        mask[12:44, 12:44] = 255            # edges between latent sample points: bilinear gives 0.5
        Image.fromarray(mask).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def release():
    return EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS),
                        subject_background="keep")


def _gen(files, seed=3):
    return GenRequest(key=f"g{seed}", prompt="a dog on the beach", class_noun="dog",
                      subject_images=(files / "subject.png",), seed=seed, run_seed=0)


def _edit(files, source="source", mask="mask", seed=1):
    return GenRequest(key=f"e/{source}", prompt="photo of a sks dog", class_noun="dog",
                      subject_images=(files / "subject.png",), seed=seed,
                      source_image=files / f"{source}.png", mask=files / f"{mask}.png")


def test_release_is_the_default_and_each_setting_can_be_overridden(release):
    assert release.protocol == "release" and release.describe()["params"]["protocol"] == "release"
    assert release.config.negative_prompt == "dark, blur, defoucus, lack of content, dizzy."
    assert release.config.max_loops == 9 and release.config.renoise == "split"
    paper = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), protocol="paper",
                         subject_background="keep", renoise="split", iterative=False)
    assert paper.config.renoise == "split" and paper.config.negative_prompt.endswith("defocus, lack of content, dizzy.")
    assert paper.settings == {**SETTINGS["paper"], "renoise": "split"}
    with pytest.raises(BenchError, match="edit_mask"):
        EZIGenMethod(LoadSpec(preset="tiny", adapter="init"), edit_mask="soft")
    with pytest.raises(BenchError, match="protocol"):
        EZIGenMethod(LoadSpec(preset="tiny", adapter="init"), protocol="arxiv")


def test_typo_negative_prompt_tokenises_differently(release):
    tok = release.components.tokenizer
    assert tok("defoucus").input_ids != tok("defocus").input_ids


def _release_loop_count(similarities, threshold=0.99, num_interations=-1):
    """The reference code's loop (infer.py loop_infer), transcribed."""
    cur, sim, max_n, min_n = 1, 0.0, 10, 4
    if num_interations != -1:
        max_n = min_n = num_interations + 1
        threshold = 1
    while (cur < max_n and sim < threshold) or cur < min_n:
        sim = similarities[cur - 1]
        cur += 1
    return cur - 1


def _our_loop_count(config, similarities):
    loops = 0
    while True:
        loops += 1
        if bool(config.finished(torch.tensor([loops]), torch.tensor([similarities[loops - 1]]))[0]):
            return loops


def test_loop_rule_matches_the_release_condition():
    rng = random.Random(0)
    release = SamplerConfig(**{"max_loops": SETTINGS["release"]["max_loops"]})
    for _ in range(300):
        sims = [rng.choice([0.5, 0.98, 0.99, 0.995, 1.0]) for _ in range(12)]
        assert _our_loop_count(release, sims) == _release_loop_count(sims)
        assert 3 <= _release_loop_count(sims) <= 9
        n = rng.randint(1, 6)
        assert _our_loop_count(SamplerConfig(fixed_loops=n), sims) == _release_loop_count(sims, num_interations=n) == n


def test_fixed_loop_count_ignores_similarity(files):
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), loops=2,
                          subject_background="keep")
    assert method.similarity is None
    facts = method.generate([_gen(files, 3), _gen(files, 4)])
    assert [f.info["bench"]["loops"] for f in facts] == [2, 2]


def test_renoise_at_split_and_resume_at_381_step(release, files, monkeypatch):
    from diffusers import DDPMScheduler
    seen = []
    original = DDPMScheduler.add_noise

    def spy(self, original_samples, noise, timesteps):
        seen.append(timesteps.tolist())
        return original(self, original_samples, noise, timesteps)

    monkeypatch.setattr(DDPMScheduler, "add_noise", spy)
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), loops=1,
                          subject_background="keep")
    method.generate([_gen(files)])
    # reference pass at t=1, then the loop's re-noise at split_ratio x 1000 = 400 (not the resume step)
    assert seen[-1] == [400]
    scheduler = DDPMScheduler.from_config(SD_SCHEDULER)
    scheduler.set_timesteps(50)
    assert int(scheduler.timesteps[int(50 - 0.4 * 50)]) == 381     # where the release resumes


def test_vae_sample_is_mean_plus_std_times_seeded_noise(release, files):
    image = subject_tensor(files / "subject.png", 64, "bilinear")[None]
    got = release.sd.encode(image, [torch.Generator().manual_seed(7)])
    posterior = release.components.vae.encode(image).latent_dist
    eps = torch.randn(posterior.mean.shape[1:], generator=torch.Generator().manual_seed(7))
    expected = (posterior.mean + posterior.std * eps) * release.components.vae.config.scaling_factor
    assert torch.allclose(got, expected, atol=1e-6)
    assert release.reference.latent == "sample"


def test_bilinear_subject_resize_is_torchvision_resize(files):
    from torchvision import transforms
    released = transforms.Compose([transforms.Resize((48, 48), interpolation=transforms.InterpolationMode.BILINEAR),
                                   transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    with Image.open(files / "wide.png") as im:
        expected = released(im.convert("RGB"))
    assert torch.allclose(subject_tensor(files / "wide.png", 48, "bilinear"), expected, atol=1e-6)


def test_exceptional_prompt_is_id_7788_without_positions(release):
    encoder = copy.deepcopy(release.components.text_encoder)
    position = (getattr(encoder, "embeddings", None) or encoder.text_model.embeddings).position_embedding
    with torch.no_grad():
        position.weight.zero_()
        expected = encoder(torch.full((2, 77), 7788, dtype=torch.long))[0]
    got = release.editor.inversion_text(2)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, release.sd.encode_text(["", ""]), atol=1e-3)


def test_release_editing_blends_with_the_latent_after_20_minus_i_steps(release, files):
    trace = {}
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False,
                          subject_background="keep")
    assert type(method.editor._scheduler(inverse=False)).__name__ == "DDPMScheduler"
    method.editor.edit([_edit(files)], trace=trace)
    trajectory = trace["trajectory"]
    assert [level for level, _ in trajectory] == [0, 100, 200, 300, 400]       # linspace grid
    mask = trace["mask"]
    assert bool(((mask > 0) & (mask < 1)).any())                                # soft (bilinear) edges
    keep = (mask == 0)
    (_, steps), = trace["steps"]
    assert [level for level, _ in steps] == [400, 300, 200, 100]                # never the clean latent
    for k, (level, latents) in zip([4, 3, 2, 1], steps):
        source = trajectory[k][1]
        outside = keep.expand_as(latents)
        assert torch.equal(latents[outside], source[outside])


def test_release_editing_keeps_the_source_aspect_ratio(files):
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False,
                          subject_background="keep")
    images = method.generate([_edit(files, "wide", "widemask")])
    assert images[0].size == (96, 64)
    square = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False,
                          subject_background="keep", edit_aspect="square")
    assert square.generate([_edit(files, "wide", "widemask")])[0].size == (64, 64)


class _FakeAnnotator:
    """Grounded-SAM stand-in: a fixed square mask, or nothing for class 'ghost'."""
    model_ids = "fake"

    def __init__(self, folder):
        self.folder, self.calls = folder, 0

    def annotate(self, images, texts):
        from bench.metrics.grounded_sam import MaskResult
        self.calls += 1
        out = []
        for path, text in zip(images, texts):
            if text == "ghost":
                out.append(MaskResult("no-detection", None, None, None))
                continue
            with Image.open(path) as im:
                w, h = im.size
            mask = np.zeros((h, w), dtype=np.uint8)
            mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
            target = self.folder / f"mask-{path.stem}.png"
            Image.fromarray(mask).save(target)
            out.append(MaskResult("ok", target, (w / 4, h / 4, 3 * w / 4, 3 * h / 4), 0.9))
        return out


def test_background_is_white_outside_the_subject_and_cached(files, tmp_path):
    fake = _FakeAnnotator(tmp_path)
    remover = BackgroundRemover("remove", annotator=fake, cache_dir=tmp_path / "white")
    (prepared,), (facts,) = remover.apply([_gen(files)])
    white = np.asarray(Image.open(prepared.subject_images[0]))
    original = np.asarray(Image.open(files / "subject.png").convert("RGB"))
    assert (white[:16] == 255).all() and (white[:, :16] == 255).all()
    assert np.array_equal(white[16:48, 16:48], original[16:48, 16:48])
    assert facts == [{"image": "subject.png", "background": "removed"}]
    remover.apply([_gen(files, 9)])
    assert fake.calls == 1                                  # same image and noun: no second annotation


def test_nothing_detected_is_used_as_is_and_flagged(files, tmp_path):
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False)
    method.background = BackgroundRemover("remove", annotator=_FakeAnnotator(tmp_path), cache_dir=tmp_path / "w")
    ghost = GenRequest(key="x", prompt="a ghost", class_noun="ghost", subject_images=(files / "subject.png",),
                       seed=0, run_seed=0)
    dog, ghost_image = method.generate([_gen(files), ghost])
    assert dog.info["bench"]["subjects"][0]["background"] == "removed" and "flags" not in dog.info["bench"]
    facts = ghost_image.info["bench"]
    assert facts["subjects"][0]["background"].startswith("no-detection")
    assert facts["flags"] == ["subject-background-not-removed"]
    assert facts["protocol"] == "release" and facts["subject_background"] == "remove"


@pytest.mark.parametrize("params, culprit", [
    ({"iterative": False, "loops": 2}, "loops=2"),                      # one-pass variants have no loops
    ({"protocol": "paper", "edit_denoiser": "ddpm"}, "edit_blend=aligned"),
    ({"protocol": "paper", "inversion_grid": "linspace"}, "edit_blend=aligned"),
])
def test_settings_that_cannot_run_are_refused_before_any_model_loads(params, culprit, monkeypatch):
    import methods.ezigen.method as method_module
    monkeypatch.setattr(method_module, "load_from_spec", lambda spec: pytest.fail("loaded a model"))
    with pytest.raises(BenchError, match=culprit):
        EZIGenMethod(LoadSpec(preset="tiny", adapter="init"), **params)


def test_an_edit_source_keeps_its_upright_aspect(tmp_path):
    """A portrait photo stored landscape with EXIF orientation 6 is edited portrait."""
    from methods.ezigen.editing import EZIGenEditor, EditSettings
    from PIL import Image as PILImage
    stored = PILImage.new("RGB", (96, 64), (10, 20, 30))
    exif = stored.getexif()
    exif[0x0112] = 6                                                      # rotate 90 degrees on display
    stored.save(tmp_path / "portrait.jpg", exif=exif)
    editor = EZIGenEditor.__new__(EZIGenEditor)
    editor.settings = EditSettings(aspect="source")
    editor.sd = type("Parts", (), {"resolution": 64, "components": type("Components", (), {"vae_scale_factor": 8})()})()
    request = GenRequest("k", "p", "dog", (), 0, source_image=tmp_path / "portrait.jpg", mask=tmp_path / "m.png")
    width, height = editor.source_size(request)
    assert (width, height) == (64, 96)


# ---- split point at any ratio (the release's integer rules) --------------------------------
def _release_split(split_ratio, steps):
    """The release's three uses of split_ratio, transcribed: the first pass's adapter gate
    (attention_main.py: ``skip_adapter_ratio * infer_steps < inf_timestep + 1`` with
    skip_adapter_ratio = 1 - split_ratio), the loops' ``skipped_steps = int(infer_steps -
    split_ratio * infer_steps)`` (infer.py), the inversion's break ``noise_step * steps <= i``
    (inverse_pipeline_partial.py) and the re-noise ``torch.tensor(split_ratio * 1000).long()``."""
    skip_adapter_ratio = 1 - split_ratio
    adapter_on = [i for i in range(steps) if skip_adapter_ratio * steps < i + 1]
    inversion = 0
    for i in range(steps):
        if split_ratio and split_ratio * steps <= i:
            break
        inversion += 1
    return (adapter_on[0] if adapter_on else steps, int(steps - split_ratio * steps), inversion,
            int(torch.tensor(split_ratio * 1000).long()))


def test_split_steps_match_the_release_over_a_sweep_of_ratios():
    for steps in (10, 25, 50, 100):
        for percent in range(1, 100):
            r = percent / 100
            config = SamplerConfig(num_inference_steps=steps, split_ratio=r, split_steps="truncate")
            first, resume, inversion, renoise_t = _release_split(r, steps)
            assert config.layout_steps == first, (steps, r)
            assert config.resume_step == resume, (steps, r)
            assert config.inversion_steps == inversion, (steps, r)            # the editor's inversion
            assert int(SamplerConfig(split_ratio=r, renoise="split").renoise_timestep(None)) == renoise_t
    assert _release_split(0.33, 50)[:2] == (33, 33) and _release_split(0.45, 50)[:2] == (27, 27)
    paper = [SamplerConfig(split_ratio=r, split_steps="round").layout_steps for r in (0.33, 0.45, 0.4)]
    assert paper == [34, 28, 30]
    assert SETTINGS["release"]["split_steps"] == "truncate" and SETTINGS["paper"]["split_steps"] == "round"


def test_the_sampler_switches_the_adapter_on_at_the_release_step(files, monkeypatch):
    """10 steps, split 0.45: the release turns the adapter on at step 5 and resumes loops at 5
    (round() would give 6)."""
    for split_steps, expected in (("truncate", 5), (None, 5), ("round", 6)):
        method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), loops=1,
                              subject_background="keep", split_ratio=0.45, split_steps=split_steps)
        calls = []
        original = method.sd.guided_noise

        def spy(latents, t, cond, uncond, guidance, **kwargs):
            calls.append(bool(kwargs))
            return original(latents, t, cond, uncond, guidance, **kwargs)

        monkeypatch.setattr(method.sd, "guided_noise", spy)
        method.generate([_gen(files)])
        first_pass, loop = calls[:STEPS], calls[STEPS:]
        assert first_pass == [False] * expected + [True] * (STEPS - expected), split_steps
        assert loop == [True] * (STEPS - expected), split_steps


# ---- reference-pass text -------------------------------------------------------------------
def test_reference_text_is_the_release_subject_prompt_or_the_training_text(files, monkeypatch):
    """release: ``a dog`` (infer_generation.sh's --subject_prompt); paper: the training text;
    any template by parameter."""
    seen = {}
    for protocol, override, expected in (("release", None, "a dog"), ("paper", None, "a photo of a dog."),
                                         ("release", "a {class_noun} toy", "a dog toy")):
        method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=STEPS), iterative=False,
                              subject_background="keep", protocol=protocol, reference_prompt=override)
        texts = []
        original = method.sd.encode_text
        monkeypatch.setattr(method.sd, "encode_text", lambda t, original=original: texts.append(list(t)) or original(t))
        features = method.reference.features([_gen(files)])
        assert [expected] in texts, (protocol, override, texts)
        assert method.describe()["params"]["reference_prompt"] == (override or SETTINGS[protocol]["reference_prompt"])
        seen[expected] = features[0][0][0]
    a, b = seen["a dog"], seen["a photo of a dog."]
    assert not torch.allclose(a, b, atol=1e-4)          # the text reaches the reference features


# ---- stop rule's CLIP input --------------------------------------------------------------------
def test_stop_rule_input_is_openai_clip_preprocessing_of_8bit_images():
    """protocol=release: the CLIP input equals OpenAI clip's _transform (torchvision Resize(n,
    BICUBIC) on PIL, CenterCrop, ToTensor, Normalize) of the image as saved."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
    from methods.common import to_pil
    from methods.ezigen.similarity import CLIP_MEAN, CLIP_STD, ImageSimilarity

    release_sim = ImageSimilarity("cpu", tiny=True, preprocess="pil")
    tensor_sim = ImageSimilarity("cpu", tiny=True, preprocess="tensor")
    n = release_sim.size
    released = Compose([Resize(n, interpolation=InterpolationMode.BICUBIC), CenterCrop(n),
                        lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    gen = torch.Generator().manual_seed(0)
    for shape in ((64, 64), (64, 96), (81, 47)):        # square, wide, odd-sized portrait
        smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1, size=shape,
                                                 mode="bilinear", align_corners=False)
        images = (smooth + 0.2 * torch.randn(2, 3, *shape, generator=gen)).clamp(-1, 1)
        ours = release_sim.preprocess(images)
        expected = torch.stack([released(image) for image in to_pil(images)])
        assert torch.allclose(ours, expected, atol=1e-6), shape
        other = tensor_sim.preprocess(images)
        assert (other - expected).abs().max() > 1e-3            # the two preprocessings are distinct
    assert SETTINGS["release"]["similarity_input"] == "pil" and SETTINGS["paper"]["similarity_input"] == "tensor"


def test_editing_at_a_ratio_where_the_release_inverts_one_step_more():
    """25 steps, split 0.28: the release inverts 8 steps (0.28 x 25 = 7.000000000000001) but
    denoises int(25 - 7.000000000000001) = 18 -> 7 steps; step i blends with the latent after
    8 - i inversion steps (as its reversed list is indexed)."""
    import tempfile
    from pathlib import Path
    method = EZIGenMethod(LoadSpec(preset="tiny", adapter="init", num_inference_steps=25, resolution=32),
                          iterative=False, subject_background="keep", split_ratio=0.28)
    assert (method.config.inversion_steps, method.config.resume_step) == _release_split(0.28, 25)[2:0:-1]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(folder / "source.png")
        Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(folder / "subject.png")
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[8:24, 8:24] = 255
        Image.fromarray(mask).save(folder / "mask.png")
        trace = {}
        method.editor.edit([_edit(folder)], trace=trace)
    trajectory = trace["trajectory"]
    (_, steps), = trace["steps"]
    assert len(trajectory) == 9 and len(steps) == 7
    assert [level for level, _ in steps] == [trajectory[8 - i][0] for i in range(7)]
