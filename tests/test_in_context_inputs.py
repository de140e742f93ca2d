"""In-context baselines, round two: inputs as each pipeline's own preprocessing expects them (a
non-square subject keeps its aspect ratio), several reference images per request, OmniGen's
posterior draw on a VAE whose posterior is wide, FLUX.2 and the Qwen-Image-Edit-2511 variant."""

from __future__ import annotations

import importlib

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from test_in_context import CLASSES, DOG, SIZE, STEPS, VASE, pixels, request
from tolerance import MEAN_TOLERANCE, assert_images_close

from bench import BenchError
from bench.images import load_rgb
from bench.types import LoadSpec


def build(name, **params):
    module, attr = CLASSES[name]
    cls = getattr(importlib.import_module(module), attr)
    return cls(LoadSpec(preset="tiny", resolution=SIZE, num_inference_steps=STEPS), name=name, **params)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 2:1 photo (the dog beside a vase) and a 1:2 one."""
    folder = tmp_path_factory.mktemp("wide")
    dog, vase = load_rgb(DOG[0]), load_rgb(VASE[0])
    landscape = Image.new("RGB", (128, 64))
    landscape.paste(dog, (0, 0))
    landscape.paste(vase, (64, 0))
    portrait = Image.new("RGB", (64, 128))
    portrait.paste(vase, (0, 0))
    portrait.paste(dog, (0, 64))
    landscape.save(folder / "landscape.png")
    portrait.save(folder / "portrait.png")
    return folder / "landscape.png", folder / "portrait.png"


def reference_pipe(method):
    from methods.in_context.tiny import tiny_pipeline_folder
    pipe = getattr(diffusers, method.pipeline_class).from_pretrained(tiny_pipeline_folder(method.tiny_kind))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_non_square_subject_reaches_the_pipeline_with_its_aspect_ratio(name, wide):
    """Before, every subject image was resized to a square of the output size: a 2:1 photo reached
    the model squeezed. Now the size the VAE encodes (recorded per image) keeps the orientation and
    roughly the ratio at these small sizes, for both orientations."""
    method = build(name)
    if name == "flux-kontext":                                   # one image per request
        sizes = [image.info["bench"]["vae_inputs"][0] for image in
                 method.generate([request("a", images=(wide[0],)), request("b", images=(wide[1],))])]
    else:                                                        # both photos in one request, in order
        sizes = method.generate([request(images=wide)])[0].info["bench"]["vae_inputs"][:2]
    (w0, h0), (w1, h1) = sizes
    assert w0 / h0 >= 1.5 and h1 / w1 >= 1.5, (name, sizes)
    assert "aspect" in method.describe()["params"]["input_preprocessing"] or name == "flux-kontext"


def test_kontext_matches_the_pipelines_own_auto_resize(wide, monkeypatch):
    """The adapter's pick = FluxKontextPipeline's ``_auto_resize`` pick with its list scaled to the output
    size: the pipeline, given the scaled list and the photo as it is, gives the same image."""
    import diffusers.pipelines.flux.pipeline_flux_kontext as module

    from methods.in_context.flux_kontext import KONTEXT_SIZES
    method = build("flux-kontext")
    assert method.describe()["params"]["_auto_resize"] is False and method.describe()["params"]["max_area"] == SIZE ** 2
    r = request(images=(wide[0],), seed=3)
    ours = method.generate([r])[0]
    monkeypatch.setattr(module, "PREFERRED_KONTEXT_RESOLUTIONS", [(w * SIZE // 1024, h * SIZE // 1024)
                                                                  for w, h in KONTEXT_SIZES])
    pipe = reference_pipe(method)
    theirs = pipe(image=[load_rgb(wide[0])], prompt=[r.prompt], height=SIZE, width=SIZE, max_area=SIZE ** 2,
                  num_inference_steps=STEPS, guidance_scale=2.5, generator=[torch.Generator().manual_seed(3)]).images[0]
    assert (pixels(ours) == pixels(theirs)).all()
    # a batch mixing orientations: each request alone and in the batch agree (grouped by input size)
    a, b = request("a", images=(wide[0],), seed=1), request("b", images=(wide[1],), seed=2)
    together = method.generate([a, b])
    assert_images_close(together[1], method.generate([b])[0], "kontext portrait in a mixed batch")


@pytest.mark.parametrize("name", ["qwen-image-edit", "omnigen"])
def test_pipeline_parity_on_a_non_square_subject(name, wide):
    """Qwen's area rule and OmniGen's processor size the photo themselves: the adapter hands it over as
    it is and gives the pipeline's image (OmniGen: within a level, its posterior draw is narrow here)."""
    method = build(name)
    r = request(images=(wide[0],), seed=4)
    ours = method.generate([r])[0]
    pipe, generator = reference_pipe(method), [torch.Generator().manual_seed(4)]
    common = dict(height=SIZE, width=SIZE, num_inference_steps=STEPS, generator=generator)
    if name == "qwen-image-edit":
        from methods.in_context.qwen_image_edit import image_areas
        with image_areas(SIZE ** 2, round(384 * SIZE / 1024) ** 2):
            theirs = pipe(image=[load_rgb(wide[0])], prompt=r.prompt, negative_prompt=" ", true_cfg_scale=4.0,
                          **common).images[0]
        assert (pixels(ours) == pixels(theirs)).all()
    else:
        theirs = pipe([method.instruction(r, 1)], input_images=[[load_rgb(wide[0])]], guidance_scale=2.5,
                      img_guidance_scale=1.6, max_input_image_size=SIZE, **common).images[0]
        assert_images_close(ours, theirs, "omnigen vs OmniGenPipeline, 2:1 subject")


def test_omnigen_posterior_draw_on_a_wide_posterior(tmp_path):
    """The tiny VAE's posterior std is 4.5e-5, so parity could not see a wrong draw. On a VAE whose
    posterior is wide, the adapter's draw (its own generator) equals the pipeline's own draw from the
    global random state seeded alike, and another draw gives a visibly different image."""
    from methods.in_context.omnigen import OmniGenMethod, image_seed
    from methods.in_context.tiny import tiny_omnigen
    folder = tmp_path / "omnigen-wide"
    tiny_omnigen(narrow=False).save_pretrained(folder)
    method = OmniGenMethod(LoadSpec(weights=str(folder), resolution=SIZE, num_inference_steps=STEPS))
    with torch.no_grad():
        posterior = method.pipe.vae.encode(torch.rand(1, 3, SIZE, SIZE) * 2 - 1).latent_dist
    assert float(posterior.std.mean()) > 0.1                        # wide: a wrong draw would show
    r = request(seed=7)
    ours = method.generate([r])[0]
    pipe = diffusers.OmniGenPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)

    def theirs(posterior_seed):
        torch.manual_seed(posterior_seed)          # the pipeline draws the posterior from the global state
        return pipe([method.instruction(r, 1)], input_images=[[load_rgb(DOG[0])]], height=SIZE, width=SIZE,
                    num_inference_steps=STEPS, guidance_scale=2.5, img_guidance_scale=1.6,
                    max_input_image_size=SIZE, generator=[torch.Generator().manual_seed(7)]).images[0]
    assert_images_close(ours, theirs(image_seed(7)), "omnigen draw vs the pipeline's draw")
    assert np.abs(pixels(ours) - pixels(theirs(image_seed(7) + 1))).mean() > 2 * MEAN_TOLERANCE


@pytest.mark.parametrize("name", ["omnigen", "qwen-image-edit", "flux2"])
def test_several_reference_images_request_k_changes_only_image_k(name):
    """All of a request's images go in by default; changing request 1's second image changes image 1
    only, and each image equals its request alone."""
    method = build(name)
    assert method.max_subject_images is None and type(method).subject_images_taken({}) is None
    batch = [request("a", images=(DOG[0], VASE[1]), seed=11),
             request("b", prompt="a vase and a dog in a garden", images=(VASE[0], DOG[1], DOG[2]), noun="vase", seed=12),
             request("c", images=(DOG[2],), seed=13)]
    together = method.generate(batch)
    assert len(together[1].info["bench"]["vae_inputs"]) >= 3
    assert (pixels(method.generate([batch[1]])[0]) == pixels(together[1])).all()       # alone = in the batch
    changed = method.generate([batch[0], request("b", prompt=batch[1].prompt, images=(VASE[0], VASE[2], DOG[2]),
                                                 noun="vase", seed=12), batch[2]])
    assert np.abs(pixels(changed[1]) - pixels(together[1])).mean() > 2 * MEAN_TOLERANCE
    assert (pixels(changed[0]) == pixels(together[0])).all() and (pixels(changed[2]) == pixels(together[2])).all()


def test_qwen_card_settings_and_the_2511_variant(tmp_path, monkeypatch):
    from bench.registry import METHODS
    from methods.in_context.qwen_image_edit import QwenImageEditMethod
    spec = LoadSpec(preset="tiny", resolution=SIZE)
    assert QwenImageEditMethod(spec).num_inference_steps == 40                       # the card's example
    assert QwenImageEditMethod(spec, settings="pipeline").num_inference_steps == 50  # __call__'s default
    assert QwenImageEditMethod(spec, settings="pipeline", num_inference_steps=7).num_inference_steps == 7
    with pytest.raises(BenchError, match="settings='fast'.*card, pipeline"):
        QwenImageEditMethod(spec, settings="fast")
    entry = METHODS.get("qwen-image-edit-2511")
    assert entry.load() is QwenImageEditMethod                                       # the 2509 class, a variant
    variant = QwenImageEditMethod(spec, name="qwen-image-edit-2511", **entry.params)
    described = variant.describe()
    assert described["model"]["base_model"] == "Qwen/Qwen-Image-Edit-2511"
    assert described["model"]["pipeline"] == "QwenImageEditPlusPipeline" and described["params"]["settings"] == "card"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(BenchError, match="'Qwen/Qwen-Image-Edit-2511'.*hf download Qwen/Qwen-Image-Edit-2511"):
        QwenImageEditMethod.check_weights("qwen-image-edit-2511", None)
    (need,) = QwenImageEditMethod.requirements(LoadSpec(weights=QwenImageEditMethod.default_weights), **entry.params)
    assert "Qwen/Qwen-Image-Edit-2511" in need.get


@pytest.mark.parametrize("method, weights", [("flux2", "black-forest-labs/FLUX.2-dev"),
                                             ("qwen-image-edit-2511", "Qwen/Qwen-Image-Edit-2511")])
def test_new_methods_are_listed_and_name_their_download(method, weights, tmp_path, monkeypatch, capsys):
    from bench.cli import main
    assert main(["ls", "methods"]) == 0
    listing = capsys.readouterr().out
    assert f"base: {weights};" in listing[listing.index(f"  {method} "):]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["run", "--method", method, "--suite", "dreambench", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"`hf download {weights} --include" in err
    assert not (tmp_path / "run").exists()


def test_flux2_refuses_nothing_it_can_take_and_records_its_inputs(wide):
    method = build("flux2")
    params = method.describe()["params"]
    assert params["guidance_scale"] == 4.0 and params["max_sequence_length"] == 512
    assert params["reference_area"] == SIZE ** 2
    with pytest.raises(BenchError, match="max_sequence_length=0"):
        build("flux2", max_sequence_length=0)
    sizes = method.generate([request(images=(wide[0], DOG[0]))])[0].info["bench"]["vae_inputs"]
    assert sizes[0][0] > sizes[0][1] and sizes[1] == [64, 64]


def test_new_paper_rows_name_their_sources():
    from bench.report import read_paper_rows
    db = read_paper_rows("dreambench").set_index("method")
    cols = ["CLIP-T", "CLIP-I", "DINO"]
    assert db.loc["UNO (ConsistCompose re-evaluation)", cols].tolist() == [0.304, 0.796, 0.661]
    assert db.loc["OmniGen2 (ConsistCompose re-evaluation; paper only)", cols].tolist() == [0.312, 0.791, 0.671]
    oc = read_paper_rows("omnicontext").set_index("method")
    assert oc.loc["OmniGen2 (paper only)", "Overall"] == 7.18 and oc.loc["GPT-4o (paper only)", "Overall"] == 8.80
    for frame in (db.loc[[m for m in db.index if "ConsistCompose" in m]], oc):
        assert frame["source"].str.contains("arXiv:").all()
        assert frame["source"].str.contains("docs/methods-in-context.md").all()


def test_qwen_takes_a_narrow_image_at_a_small_resolution(tmp_path):
    """A 3:1 photo at 64 px: the pipeline's own rule rounded the vision encoder's short side to 0 px
    and PIL failed after the model had loaded (an internal error on a smoke run of OmniContext). Such
    an image gets the least area that keeps every side; others keep the pipeline's area (parity)."""
    from methods.in_context.qwen_image_edit import QwenImageEditMethod
    tall = tmp_path / "tall.png"
    Image.new("RGB", (40, 120), (40, 40, 200)).save(tall)
    image = build("qwen-image-edit").generate([request(images=(tall,))])[0]
    (width, height), = image.info["bench"]["vae_inputs"]
    assert height > width
    assert QwenImageEditMethod.area_for(576, [Image.new("RGB", (128, 64))]) == 576
    assert QwenImageEditMethod.area_for(576, [Image.new("RGB", (120, 40))]) == 24 ** 2 * 3


@pytest.mark.parametrize("method, option, message", [
    ("omnigen", ["--param", "max_subject_images=0"], "max_subject_images=0: method 'omnigen' needs at least 1"),
    ("qwen-image-edit", ["--param", "max_subject_images=-1"], "needs at least 1"),
    ("flux2", ["--param", "max_subject_images=0"], "needs at least 1"),
    ("qwen-image-edit-2511", ["--param", "true_cfg_scale=0.5"], "true_cfg_scale=0.5: method 'qwen-image-edit-2511'"),
    ("qwen-image-edit", ["--resolution", "32"], "--resolution 32: method 'qwen-image-edit' generates at multiples"),
    ("omnigen", ["--resolution", "24"], "--resolution 24: method 'omnigen' generates at multiples of 16"),
    ("omnigen", ["--param", "prompt_template={prompt} alone"], "needs the placeholder {images}"),
    ("flux-kontext", ["--param", "max_sequence_length=513"], "max_sequence_length=513: method 'flux-kontext' takes 1 to 512"),
])
def test_hostile_parameters_fail_at_the_dry_run(method, option, message, tmp_path, capsys):
    """Each passed the dry run and was refused (or crashed) only when the method was built."""
    from bench.cli import main
    out = tmp_path / "run"
    assert main(["run", "--method", method, "--suite", "dreambench", "--preset", "smoke", "--dry-run",
                 "--out", str(out), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
