"""FastComposer suite: the 15 identities layout, the 40 prompts, root detection, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from bench import BenchError
from bench.suites import load_suite
from bench.suites.fastcomposer import IDENTITIES, PROMPTS, FastComposer


def make_celeba(repo: Path, ids=tuple(IDENTITIES)) -> Path:
    for identity in ids:
        folder = repo / "data" / "celeba_test_single" / identity
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 150, 120)).save(folder / f"{identity}.jpg")
    return repo


def test_real_layout_counts_from_any_root(tmp_path):
    repo = make_celeba(tmp_path / "fastcomposer")
    for root in (repo, repo / "data", repo / "data" / "celeba_test_single"):
        suite = FastComposer(root)
        samples = suite.samples()
        assert len(samples) == 15 * 40 and len({s.cell for s in samples}) == 600
        assert suite.describe() == {"identities": 15, "men": 6, "women": 9, "prompts": 40, "images_per_seed": 2400}
    assert suite.default_images_per_prompt == 4 and suite.default_metrics == ("faceid", "clip-t-l14")
    assert Counter(s.category for s in samples) == {"accessory": 150, "style": 150, "action": 150, "context": 150}


def test_prompt_texts_follow_the_protocol(tmp_path):
    samples = FastComposer(make_celeba(tmp_path / "r")).samples()
    first_man = [s for s in samples if s.subject == "000001"]
    first_woman = [s for s in samples if s.subject == "000612"]
    assert [s.prompt_index for s in first_man] == list(range(40))
    assert first_man[0].prompt == "a man img wearing a red hat"
    assert first_man[0].eval_text == "a man wearing a red hat"
    assert first_woman[10].prompt == "a painting of a woman img in the style of Banksy"
    assert first_woman[20].eval_text == "a woman riding a horse"
    assert first_man[39].prompt == "a man img on top of a purple rug in a forest"
    assert first_man[0].class_noun == "man" and first_woman[0].class_noun == "woman"
    assert len({t for _, t in PROMPTS}) == 40
    assert all("img" not in s.eval_text and "  " not in s.eval_text for s in samples)
    ref = first_man[0].reference_images
    assert len(ref) == 1 and ref == first_man[0].subject_images and ref[0].name == "000001.jpg"


def test_options(tmp_path):
    repo = make_celeba(tmp_path / "r")
    extra = repo / "data" / "celeba_test_single" / "000001" / "000001_b.jpg"
    Image.new("RGB", (8, 8)).save(extra)
    samples = FastComposer(repo, identifier="", subjects="000001,000612", prompt_indices=[0, 39]).samples()
    assert [(s.subject, s.prompt_index) for s in samples] == [("000001", 0), ("000001", 39), ("000612", 0), ("000612", 39)]
    assert samples[0].prompt == "a man wearing a red hat"
    assert samples[0].reference_images[0].name == "000001.jpg"           # the first image, sorted by name
    with pytest.raises(BenchError, match="unknown identity 123456"):
        FastComposer(repo, subjects=["123456"])
    with pytest.raises(BenchError, match="prompt index 40"):
        FastComposer(repo, prompt_indices=[40])


def test_bad_inputs_name_the_folder(tmp_path):
    repo = make_celeba(tmp_path / "r", ids=[i for i in IDENTITIES if i != "004153"])
    with pytest.raises(BenchError, match=r"1 of the 15 identities are missing in .*celeba_test_single: 004153"):
        FastComposer(repo).samples()
    (repo / "data" / "celeba_test_single" / "004153").mkdir()
    with pytest.raises(BenchError, match=r"celeba_test_single/004153 has no .jpg"):
        FastComposer(repo).samples()
    with pytest.raises(BenchError, match=r"is not the FastComposer data"):
        FastComposer(tmp_path / "elsewhere").samples()


def test_mini_suite_loads():
    suite = load_suite("fastcomposer", mini=True)
    samples = suite.samples()
    assert {s.subject for s in samples} == {"000001", "000612"}
    assert sorted({s.prompt_index for s in samples}) == [0, 10, 20, 30]
    assert all(s.reference_images[0].exists() for s in samples)


# ---- preprocessing (docs/protocols.md section 4) -------------------------------------------------
def test_official_preprocessing_is_the_default_and_reaches_the_metrics(tmp_path):
    repo = make_celeba(tmp_path / "fastcomposer")
    suite = FastComposer(repo)
    assert suite.preprocessing == "official"
    assert suite.metric_params()["faceid"] == {"preprocessing": "fastcomposer"}
    assert suite.metric_params()["clip-t-l14"] == {"preprocessing": "fastcomposer"}
    assert FastComposer(repo, preprocessing="pil").metric_params()["faceid"] == {"preprocessing": "pil"}
    with pytest.raises(BenchError, match="preprocessing"):
        FastComposer(repo, preprocessing="jpeg")


def test_identity_ids_given_as_numbers_keep_their_six_digits(tmp_path):
    repo = make_celeba(tmp_path / "fastcomposer")
    # `--suite-option subjects=000001` reaches the suite as the number 1.
    assert {s.subject for s in FastComposer(repo, subjects=1).samples()} == {"000001"}


def test_fastcomposer_clip_input_is_the_jpeg_resized_as_a_tensor_without_antialiasing(tmp_path):
    """ClipMetric(preprocessing='fastcomposer') against FastComposer's clip_eval.py steps written
    with torch directly: the image saved as JPEG with PIL's defaults and read back, ToTensor,
    bicubic interpolation of the float tensor without antialiasing, centre crop, CLIP statistics."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bench.metrics.clip import ClipMetric
    from bench.metrics.tiny import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_tiny_open_clip

    rng = np.random.default_rng(0)
    png = tmp_path / "out.png"
    Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(png)   # high frequencies: aliasing shows
    texts = ["a man wearing a red hat"]
    official = ClipMetric(preset="tiny", preprocessing="fastcomposer", image_metric=False)
    harness = ClipMetric(preset="tiny", image_metric=False)
    assert official.version == "2-fastcomposer" and harness.version == "2"

    model, _, tokenizer = build_tiny_open_clip()
    jpg = tmp_path / "out.jpg"
    Image.open(png).save(jpg)                                   # what FastComposer's run.py does
    pixels = torch.from_numpy(np.array(Image.open(jpg).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    pixels = F.interpolate(pixels, size=(224, 224), mode="bicubic", align_corners=False, antialias=False)
    pixels = (pixels - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    expected = float((image * text).sum())
    assert official.clip_t([png], texts)[0] == pytest.approx(expected, abs=1e-5)
    assert official.clip_t([jpg], texts)[0] == pytest.approx(expected, abs=1e-5)   # a JPEG is not re-encoded
    assert abs(harness.clip_t([png], texts)[0] - expected) > 1e-4                   # the PIL path differs
