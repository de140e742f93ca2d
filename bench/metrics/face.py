"""Face identity scores (docs/protocols.md section 4).

``faceid/facenet-vggface2`` (the FastComposer protocol, entry "faceid"): facenet-pytorch MTCNN
(image_size 160, margin 0, min_face_size 20, thresholds 0.6/0.7/0.7, factor 0.709,
post_process=True, keep_all=True and the first face = the largest), called on one image at a
time as FastComposer's evaluation calls it, crops the face of the generated image and of the
subject's reference image (the first one); InceptionResnetV1 trained on VGGFace2 embeds both crops
(512-d, L2-normalised); the score is their dot product clamped at 0. A generated image without a
detected face scores 0 and sets ``faceid_no_face/mtcnn`` to 1. A reference without a face gives
NaN (cannot be computed; FastComposer's code stops with an assertion there).

``arcface/<pack>`` (an extra, entry "arcface"): insightface's model pack (default ``buffalo_l``
in ``~/.insightface/models/``): the SCRFD detector gives boxes and 5 landmarks, the largest face
is aligned to 112x112 (insightface ``norm_crop``) and embedded by the pack's ArcFace ONNX model
through insightface's ``ArcFaceONNX``; cosine of the normalised embeddings, clamped at 0, with
the same no-face rule (``arcface_no_face/<pack>``).

Parameter ``preprocessing``: "pil" reads each file as it is (bench.images.load_rgb);
"fastcomposer" (what the FastComposer suite sets by default) reads a generated image as the JPEG
FastComposer's generation script would have saved (Pillow's defaults, quality 75; a JPEG file is
read as it is). The version says which ("2" or "2-fastcomposer").

facenet-pytorch pins torch<=2.3 and numpy<2 in its metadata but runs with this stack: install it
with ``pip install --no-deps facenet-pytorch``. MTCNN's weights ship inside that package.

Tiny presets (tests, smoke runs): FaceNet keeps the real MTCNN and a randomly initialised
InceptionResnetV1; ArcFace uses a small ONNX model with ArcFace's signature (input ``[N, 3, 112,
112]``, output ``[N, 512]``) built with onnx.helper, run by the same ``ArcFaceONNX`` code, and a
stand-in detector that reports one face (ArcFace's canonical landmarks on the centred square)
in any image that is not a single flat colour.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

from bench import BenchError
from bench.limits import reason
from bench.images import as_saved_jpeg, load_rgb
from bench.metrics.base import Metric, ScoreItem

FACENET_CHECKPOINT = "20180402-114759-vggface2.pt"
FACENET_URL = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{FACENET_CHECKPOINT}"
# FastComposer's evaluation (single_object_evaluation.py): keep_all=True with the default
# select_largest=True returns every face, largest first; the score uses the first.
MTCNN_SETTINGS = dict(image_size=160, margin=0, min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709,
                      post_process=True, select_largest=True, keep_all=True)
DEFAULT_PACK = "buffalo_l"
# ArcFace's 5-point template for a 112x112 crop (eyes, nose tip, mouth corners).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def _rgb(path: Path) -> Image.Image:
    return load_rgb(path)


def _torch_home() -> Path:
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"),
                                                                          "torch"))))


def _import_facenet():
    try:
        from facenet_pytorch import MTCNN, InceptionResnetV1
    except ImportError:
        raise BenchError("the faceid metric needs facenet-pytorch: `pip install --no-deps facenet-pytorch` "
                         "(its pins on torch and numpy are outdated; it works with this stack)") from None
    return MTCNN, InceptionResnetV1


def _clamped(value: float) -> float:
    return max(float(value), 0.0)


class _FaceIdentity(Metric):
    """Shared scoring: reference embeddings once per file, no face -> 0 and a flag."""

    score_id: str
    flag_id: str

    def __init__(self, preprocessing: str = "pil"):
        if preprocessing not in ("pil", "fastcomposer"):
            raise BenchError(f"{self.family}: unknown preprocessing {preprocessing!r} (use 'pil' or 'fastcomposer')")
        self.preprocessing = preprocessing
        # The preprocessing is part of the version, so cached scores of the other one are not reused.
        self.version = type(self).version + ("" if preprocessing == "pil" else f"-{preprocessing}")
        self._reference_cache: dict[Path, torch.Tensor | None] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.score_id, self.flag_id)

    def embed_faces(self, images: list[Image.Image]) -> list[torch.Tensor | None]:
        """One L2-normalised embedding per image (its largest face), None without a face."""
        raise NotImplementedError

    def _references(self, paths: list[Path]) -> list[torch.Tensor | None]:
        missing = list(dict.fromkeys(p for p in paths if p not in self._reference_cache))
        if missing:
            for p, e in zip(missing, self.embed_faces([_rgb(p) for p in missing])):
                self._reference_cache[p] = e
        return [self._reference_cache[p] for p in paths]

    def score(self, items: Sequence[ScoreItem]) -> list[dict[str, float]]:
        for item in items:
            if not item.reference_images:
                raise BenchError(f"{item.key}: no reference image for identity {item.subject!r}")
        # fastcomposer: generated images read back as the JPEG FastComposer's generation script saves.
        read = as_saved_jpeg if self.preprocessing == "fastcomposer" else _rgb
        generated = self.embed_faces([read(it.image) for it in items])
        references = self._references([it.reference_images[0] for it in items])
        rows = []
        for gen, ref in zip(generated, references):
            if ref is None:
                value = float("nan")                 # the reference has no face: cannot be computed
            elif gen is None:
                value = 0.0
            else:
                value = _clamped(gen @ ref)
            rows.append({self.score_id: value, self.flag_id: 1.0 if gen is None else 0.0})
        return rows


class FaceNetIdentity(_FaceIdentity):
    """FastComposer's identity score: MTCNN + FaceNet (VGGFace2)."""

    family = "faceid"

    @classmethod
    def requirements(cls, preset: str | None = None, **params) -> list:
        """facenet-pytorch (MTCNN's weights ship inside it) and, for real scores, FaceNet VGGFace2."""
        from bench import needs

        out = [needs.package("facenet-pytorch (MTCNN; its weights ship inside)", "facenet_pytorch",
                             "pip install --no-deps facenet-pytorch==2.6.0")]
        if preset is None:
            path = _torch_home() / "checkpoints" / FACENET_CHECKPOINT
            out.append(needs.local_file("FaceNet VGGFace2 weights", path,
                                        f"mkdir -p {path.parent} && curl -L -o {path} {FACENET_URL}",
                                        int(107 * needs.MB)))
        return out
    # 2: MTCNN one image at a time (version 1 batched same-size images, which fails on a batch
    # mixing images with and without a face); files read with bench.images.load_rgb.
    version = "2"

    def __init__(self, device: str = "cpu", preset: str | None = None, batch_size: int = 32,
                 preprocessing: Literal["pil", "fastcomposer"] = "pil"):
        super().__init__(preprocessing)
        if preset not in (None, "tiny"):
            raise BenchError(f"faceid: unknown preset {preset!r} (use 'tiny' or none)")
        MTCNN, InceptionResnetV1 = _import_facenet()
        self.device, self.batch_size = device, batch_size
        self.detector = MTCNN(device=device, **MTCNN_SETTINGS)
        if preset == "tiny":
            from bench.metrics.tiny import seeded
            with seeded(0):
                self.embedder = InceptionResnetV1(pretrained=None, classify=False)
            name = "tiny-random"
        else:
            self.embedder = InceptionResnetV1(pretrained=None, classify=False)
            self.embedder.load_state_dict(self._vggface2_state())
            name = "facenet-vggface2"
        self.embedder.to(device).eval().requires_grad_(False)
        self.score_id, self.flag_id = f"faceid/{name}", "faceid_no_face/mtcnn"

    @staticmethod
    def _vggface2_state() -> dict:
        path = _torch_home() / "checkpoints" / FACENET_CHECKPOINT
        if not path.is_file():
            raise BenchError(f"FaceNet VGGFace2 weights are missing: put {FACENET_URL} at {path} "
                             f"(or set TORCH_HOME); facenet-pytorch downloads it there when online; to test without "
                             "it, score with random metric models: --metric-preset tiny")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BenchError(f"cannot read the FaceNet checkpoint {path}: {reason(exc)}") from None
        if not isinstance(state, dict):
            raise BenchError(f"{path} is not a FaceNet state dict")
        # The checkpoint carries the VGGFace2 classifier too; the embedding network does not use it.
        return {k: v for k, v in state.items() if not k.startswith("logits.")}

    @torch.no_grad()
    def crop_faces(self, images: list[Image.Image]) -> list[torch.Tensor | None]:
        """MTCNN crops (3x160x160, post-processed) of the largest face, None without one.

        One image per MTCNN call, as FastComposer's evaluation calls it: a batched call over
        images with different face counts fails inside facenet-pytorch (numpy "inhomogeneous
        shape"), and the detections of one image never depend on the others."""
        crops: list[torch.Tensor | None] = []
        for image in images:
            faces = self.detector(image)           # None, or [n, 3, 160, 160], largest first
            crops.append(None if faces is None or len(faces) == 0 else faces[0])
        return crops

    @torch.no_grad()
    def embed_faces(self, images: list[Image.Image]) -> list[torch.Tensor | None]:
        crops = self.crop_faces(images)
        found = [i for i, c in enumerate(crops) if c is not None]
        out: list[torch.Tensor | None] = [None] * len(images)
        for start in range(0, len(found), self.batch_size):
            chunk = found[start:start + self.batch_size]
            x = torch.stack([crops[i] for i in chunk]).to(self.device)
            embeddings = torch.nn.functional.normalize(self.embedder(x).float(), dim=-1).cpu()
            for i, e in zip(chunk, embeddings):
                out[i] = e
        return out


# ---- ArcFace (insightface) -------------------------------------------------------------------
def write_tiny_arcface_onnx(path: Path, seed: int = 0, dim: int = 512) -> Path:
    """A small ONNX model with ArcFace's signature: float input [N, 3, 112, 112] ("input.1"),
    output [N, dim]: 8x8 average pooling, flatten, one random projection."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((3 * 14 * 14, dim)) / np.sqrt(3 * 14 * 14)).astype(np.float32)
    bias = (rng.standard_normal(dim) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[8, 8], strides=[8, 8]),
         helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
         helper.make_node("Gemm", ["flat", "weight", "bias"], ["embedding"], name="project")],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="bench-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


class CentredFaceDetector:
    """The tiny preset's stand-in detector: one face, ArcFace's template landmarks scaled onto the
    centred square, in any image that is not a single flat colour; no face otherwise."""

    def detect(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = bgr.shape[:2]
        if bgr.reshape(-1, 3).std(axis=0).max() < 1.0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        side = min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
        kps = ARCFACE_TEMPLATE * (side / 112.0) + np.array([x0, y0], np.float32)
        box = np.array([[x0, y0, x0 + side, y0 + side, 1.0]], np.float32)
        return box, kps[None]


class _ScrfdDetector:
    def __init__(self, model, det_size: int):
        self.model = model
        self.model.prepare(ctx_id=-1, input_size=(det_size, det_size))

    def detect(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, kps = self.model.detect(bgr, max_num=0, metric="default")
        if kps is None:
            kps = np.zeros((len(boxes), 5, 2), np.float32)
        return boxes, kps


class ArcFaceIdentity(_FaceIdentity):
    """ArcFace cosine through insightface: SCRFD detection, 5-point alignment, ArcFace ONNX."""

    family = "arcface"

    @classmethod
    def requirements(cls, preset: str | None = None, pack: str = DEFAULT_PACK, root: str | Path = "~/.insightface",
                     **params) -> list:
        """insightface + onnxruntime and, for real scores, the unpacked model pack."""
        from bench import needs

        out = [needs.package("insightface", "insightface", "pip install insightface onnxruntime"),
               needs.package("onnxruntime", "onnxruntime", "pip install onnxruntime")]
        if preset is None:
            folder = Path(os.path.expanduser(str(root))) / "models" / pack
            url = f"https://github.com/deepinsight/insightface/releases/download/v0.7/{pack}.zip"
            out.append(needs.local_folder(
                f"insightface model pack {pack}", folder, ("det_*.onnx", "w600k*.onnx|glintr*.onnx|webface*.onnx|*arcface*.onnx"),
                f"mkdir -p {folder} && curl -L -o {pack}.zip {url} && unzip {pack}.zip -d {folder}",
                int(0.28 * needs.GB) if pack == DEFAULT_PACK else None))           # buffalo_l.zip: ~0.28 GB
        return out
    version = "2"         # 2: files read with bench.images.load_rgb (EXIF, alpha on white, 16-bit)

    def __init__(self, device: str = "cpu", preset: str | None = None, pack: str = DEFAULT_PACK,
                 root: str | Path = "~/.insightface", det_size: int = 640, model_file: str | Path | None = None,
                 preprocessing: Literal["pil", "fastcomposer"] = "pil"):
        super().__init__(preprocessing)
        if preset not in (None, "tiny"):
            raise BenchError(f"arcface: unknown preset {preset!r} (use 'tiny' or none)")
        try:
            from insightface.model_zoo import model_zoo
        except ImportError:
            raise BenchError("the arcface metric needs insightface and onnxruntime: `pip install insightface`") from None
        self.device = device
        if preset == "tiny":
            from bench.files import cache_root
            if model_file and not Path(model_file).expanduser().is_file():
                # never write a file where the user pointed: only the cache gets the tiny model
                raise BenchError(f"arcface: model_file {model_file}: no such file")
            path = Path(model_file).expanduser() if model_file else cache_root() / "tiny-arcface" / "tiny_arcface.onnx"
            if not path.exists():
                write_tiny_arcface_onnx(path)
            self.recognizer = model_zoo.get_model(str(path))
            self.detector = CentredFaceDetector()
            name = "tiny-random"
        else:
            folder = Path(os.path.expanduser(str(root))) / "models" / pack
            onnx_files = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
            detection = [p for p in onnx_files if p.name.startswith("det_")]
            recognition = [Path(model_file)] if model_file else [
                p for p in onnx_files if p.name.startswith(("w600k", "glintr", "webface")) or "arcface" in p.name]
            if not detection or not recognition:
                raise BenchError(f"insightface model pack {pack!r} is missing or incomplete: unpack {pack}.zip "
                                 f"(from the insightface releases) into {folder} so that it holds det_*.onnx and the "
                                 f"recognition model (e.g. w600k_r50.onnx); to test without it: --metric-preset tiny")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else [
                "CPUExecutionProvider"]
            self.detector = _ScrfdDetector(model_zoo.get_model(str(detection[0]), providers=providers), det_size)
            self.recognizer = model_zoo.get_model(str(recognition[0]), providers=providers)
            name = pack
        if type(self.recognizer).__name__ != "ArcFaceONNX":
            raise BenchError(f"arcface: {getattr(self.recognizer, 'model_file', model_file)} is not an ArcFace "
                             f"recognition model (input [N, 3, 112, 112] expected)")
        self.score_id, self.flag_id = f"arcface/{name}", f"arcface_no_face/{name}"

    def embed_faces(self, images: list[Image.Image]) -> list[torch.Tensor | None]:
        from insightface.app.common import Face

        out: list[torch.Tensor | None] = []
        for im in images:
            bgr = np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
            boxes, kps = self.detector.detect(bgr)
            if len(boxes) == 0:
                out.append(None)
                continue
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            k = int(np.argmax(areas))                # the largest face, as in the FaceNet protocol
            face = Face(bbox=boxes[k, :4], kps=kps[k], det_score=float(boxes[k, 4]))
            with warnings.catch_warnings():      # insightface's alignment calls a deprecated skimage API
                warnings.simplefilter("ignore", FutureWarning)
                embedding = torch.from_numpy(np.asarray(self.recognizer.get(bgr, face), dtype=np.float32))
            out.append(torch.nn.functional.normalize(embedding, dim=0))
        return out
