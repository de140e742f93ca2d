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
