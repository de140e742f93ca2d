"""Face identity metrics: facenet-pytorch runs with our stack, tiny ONNX ArcFace, no-face path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import BenchError
from bench.metrics.base import ScoreItem

pytest.importorskip("facenet_pytorch")
pytest.importorskip("insightface")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skimage import data        # scikit-image (an insightface dependency) ships this photograph

    folder = tmp_path_factory.mktemp("faces")
    astronaut = Image.fromarray(data.astronaut())
    out = {"face": folder / "face.png", "face_small": folder / "face_small.png", "blank": folder / "blank.png",
           "noise": folder / "noise.png"}
    astronaut.save(out["face"])
    astronaut.resize((256, 256)).save(out["face_small"])
    Image.new("RGB", (128, 128), (128, 128, 128)).save(out["blank"])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(out["noise"])
    return out


def _item(image: Path, reference: Path) -> ScoreItem:
    return ScoreItem(key=image.stem, image=image, seed=0, subject="000001", class_noun="man", eval_text="a man",
                     reference_images=(reference,), subject_images=(reference,))


# ---- FaceNet (FastComposer protocol) ---------------------------------------------------------
@pytest.fixture(scope="module")
def facenet():
    from bench.metrics.face import FaceNetIdentity
    return FaceNetIdentity(preset="tiny")


def test_mtcnn_settings_follow_the_protocol(facenet):
    d = facenet.detector
    assert (d.image_size, d.margin, d.min_face_size, d.factor) == (160, 0, 20, 0.709)
    assert list(d.thresholds) == [0.6, 0.7, 0.7] and d.post_process and d.selection_method == "largest"


def test_facenet_runs_with_our_stack_and_scores_faces(facenet, files):
    crops = facenet.crop_faces([Image.open(files["face"]).convert("RGB"), Image.open(files["blank"]).convert("RGB")])
    assert crops[0].shape == (3, 160, 160) and crops[1] is None           # MTCNN finds the astronaut only
    rows = facenet.score([_item(files["face"], files["face"]), _item(files["face_small"], files["face"]),
                          _item(files["blank"], files["face"])])
    assert facenet.ids == ("faceid/tiny-random", "faceid_no_face/mtcnn")
    assert rows[0]["faceid/tiny-random"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= rows[1]["faceid/tiny-random"] <= 1.0 + 1e-6
    assert rows[2] == {"faceid/tiny-random": 0.0, "faceid_no_face/mtcnn": 1.0}   # no face: 0 and the flag
    assert rows[0]["faceid_no_face/mtcnn"] == 0.0


def test_reference_without_a_face_cannot_be_scored(facenet, files):
    [row] = facenet.score([_item(files["face"], files["blank"])])
    assert np.isnan(row["faceid/tiny-random"]) and row["faceid_no_face/mtcnn"] == 0.0


def test_scores_are_clamped_at_zero(facenet, files, monkeypatch):
    e = torch.nn.functional.normalize(torch.ones(512), dim=0)
    monkeypatch.setattr(facenet, "embed_faces", lambda images: [e if im.size == (512, 512) else -e for im in images])
    facenet._reference_cache.clear()
    [row] = facenet.score([_item(files["face_small"], files["face"])])
    assert row["faceid/tiny-random"] == 0.0 and row["faceid_no_face/mtcnn"] == 0.0
    facenet._reference_cache.clear()


def test_missing_vggface2_weights_name_the_file(tmp_path, monkeypatch):
    from bench.metrics.face import FaceNetIdentity
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BenchError, match=r"20180402-114759-vggface2.pt"):
        FaceNetIdentity()


# ---- ArcFace (insightface) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def arcface(tmp_path_factory):
    from bench.metrics.face import ArcFaceIdentity, write_tiny_arcface_onnx
    model = write_tiny_arcface_onnx(tmp_path_factory.mktemp("onnx") / "tiny_arcface.onnx")
    return ArcFaceIdentity(preset="tiny", model_file=model)


def test_tiny_arcface_has_the_arcface_signature(arcface):
    import onnxruntime
    session = onnxruntime.InferenceSession(arcface.recognizer.model_file, providers=["CPUExecutionProvider"])
    [inp], [out] = session.get_inputs(), session.get_outputs()
    assert inp.shape[1:] == [3, 112, 112] and out.shape[1:] == [512]
    assert type(arcface.recognizer).__name__ == "ArcFaceONNX"              # insightface routed it as ArcFace
    assert arcface.recognizer.input_size == (112, 112)


def test_arcface_scores_and_no_face_path(arcface, files):
    rows = arcface.score([_item(files["face"], files["face"]), _item(files["noise"], files["face"]),
                          _item(files["blank"], files["face"])])
    score, flag = arcface.ids
    assert rows[0][score] == pytest.approx(1.0, abs=1e-5) and rows[0][flag] == 0.0
    assert 0.0 <= rows[1][score] < 0.999                                   # another image, another embedding
    assert rows[2] == {score: 0.0, flag: 1.0}
    embeddings = arcface.embed_faces([Image.open(files["face"])])
    assert embeddings[0].shape == (512,) and float(embeddings[0].norm()) == pytest.approx(1.0, abs=1e-5)


def test_missing_insightface_pack_names_it_and_where_it_goes(tmp_path):
    from bench.metrics.face import ArcFaceIdentity
    with pytest.raises(BenchError, match=r"'buffalo_l'.*" + str(tmp_path / "models" / "buffalo_l")):
        ArcFaceIdentity(root=tmp_path)


# ---- the real loaders: FaceNet from TORCH_HOME, through `bench score` -------------------------
def _official_identity(detector, embedder, generated: Image.Image, reference: Image.Image) -> float:
    """FastComposer's compute_average_similarity (single_object_evaluation.py), written from
    facenet-pytorch's documented API: MTCNN(keep_all=True) on one image, the first face."""
    face = detector(generated)
    if face is None:
        return 0.0
    ref = detector(reference)[:1]
    assert len(ref) == 1
    return max(float(embedder(face[:1]) @ embedder(ref).T), 0.0)


def test_real_photos_mixed_with_faceless_images_score_through_bench_score(tmp_path, monkeypatch):
    """The held-out situation of a real FastComposer run: faces and faceless images in one batch.
    MTCNN's real weights (they ship with facenet-pytorch) detect; the real InceptionResnetV1 with
    random weights sits where facenet-pytorch's loader looks (TORCH_HOME/checkpoints). Each value
    equals the official per-image computation, every face is found, every faceless image flagged."""
    import subprocess
    import sys

    import pandas as pd
    from facenet_pytorch import MTCNN, InceptionResnetV1
    from skimage import data

    from bench.metrics.face import FACENET_CHECKPOINT, MTCNN_SETTINGS
    from bench.metrics.tiny import seeded

    torch_home = tmp_path / "torch"
    (torch_home / "checkpoints").mkdir(parents=True)
    with seeded(3):
        full = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)   # VGGFace2 layout, logits too
    torch.save(full.state_dict(), torch_home / "checkpoints" / FACENET_CHECKPOINT)

    root = tmp_path / "fc" / "data" / "celeba_test_single" / "000001"
    root.mkdir(parents=True)
    astronaut = Image.fromarray(data.astronaut())
    reference = root / "000001.jpg"
    astronaut.save(reference, quality=95)
    generated = {
        "face": astronaut.resize((256, 256)),
        "face_mirrored": astronaut.resize((256, 256)).transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "face_close": astronaut.crop((100, 0, 400, 300)).resize((256, 256)),
        "coffee": Image.fromarray(data.coffee()).resize((256, 256)),
        "cat": Image.fromarray(data.chelsea()).resize((256, 256)),
        "flat": Image.new("RGB", (256, 256), (120, 140, 160)),
    }
    images = tmp_path / "images"
    for k, (name, image) in enumerate(generated.items()):
        target = images / "000001" / "0" / "s0" / f"i{k}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)

    env = {**__import__("os").environ, "TORCH_HOME": str(torch_home), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "score", "--suite", "fastcomposer", "--images", str(images),
         "--data-root", str(tmp_path / "fc"), "--suite-option", "prompt_indices=0", "--suite-option", "subjects=000001", "--metrics", "faceid",
         "--out", str(out), "--no-progress", "--device", "cpu", "--batch-size", "6"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = pd.read_parquet(out / "scores.parquet")
    flags = scores[scores.metric == "faceid_no_face/mtcnn"].sort_values("key")["value"].tolist()
    values = scores[scores.metric == "faceid/facenet-vggface2"].sort_values("key")["value"].tolist()
    assert flags == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]          # every face found, every faceless image flagged
    assert set(scores.metric_version) == {"2-fastcomposer"}  # the suite's default: the official reading

    # The independent computation: the official script's calls, JPEG as its generator saved them.
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    official = {k: v for k, v in MTCNN_SETTINGS.items()}
    detector = MTCNN(device="cpu", **official)
    embedder = InceptionResnetV1(pretrained="vggface2").eval()
    ref_image = Image.open(reference).convert("RGB")
    expected = []
    for k, image in enumerate(generated.values()):
        jpg = tmp_path / f"official_{k}.jpg"
        image.save(jpg)                                    # as FastComposer's run.py saves: PIL defaults
        with torch.no_grad():
            expected.append(_official_identity(detector, embedder, Image.open(jpg).convert("RGB"), ref_image))
    assert values[3:] == [0.0, 0.0, 0.0]
    assert values == pytest.approx(expected, abs=1e-4)
    assert min(values[:3]) > 0.0                            # random weights, but real faces give positive cosines
