"""The shared base of the in-context baselines: each is one diffusers pipeline called on the
request's own images (docs/methods-in-context.md).

What the base owns, so that an adapter is only its input mapping:

- loading: a Hugging Face id (offline once cached) or a local pipeline folder through the
  pipeline class's ``from_pretrained``; ``--preset smoke|tiny`` builds the tiny stand-in of
  :mod:`methods.in_context.tiny`, saves it and loads that folder through the same call. Missing
  weights are one line naming the id and the ``hf download`` command;
- placement: bf16 on CUDA by default (the runner reads ``cuda_dtype``), ``offload=model|sequential``
  through diffusers' ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload``;
- randomness: one CPU generator per request, seeded from the request alone, passed to the
  pipeline as a list (diffusers draws each row's noise from its own generator);
- images: every request's own subject image(s) (all of them by default, or the first
  ``max_subject_images``), loaded upright and handed over as each pipeline's own preprocessing
  expects them (:meth:`InContextMethod.prepare_subject`: no square resize, the aspect ratio is
  kept; what each adapter does is in run.json as ``input_preprocessing``); editing requests add
  their source image, resized to the output size (the canvas), and are composited back into the
  source outside the mask (white = region to edit; ``edit_composite=false`` keeps the model's
  whole image);
- records: base model, dtype, the transformer rows run per image (``transformer_calls``,
  counted by a forward hook: one row of one transformer forward = one call for that image) and
  the (width, height) of every image the VAE encoded for it (``vae_inputs``, seen by a wrapper
  of ``vae.encode``: what really reached the model).

An adapter sets ``pipeline_class``, ``default_weights``, ``tasks`` and implements
:meth:`InContextMethod.run` (one pipeline call for a group of requests) and, when the pipeline
cannot batch requests faithfully, ``batch_requests = False``. A registration may load other
weights of the same class (``weights_id``, e.g. ``qwen-image-edit-2511``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image

from bench import BenchError
from bench.images import load_rgb
from bench.models import DTYPES
from bench.types import GenRequest, LoadSpec
from methods.common import load_mask_tensor, request_generators

OFFLOAD = ("none", "model", "sequential")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True")


#: the diffusers layout of a pipeline repository: model_index.json and one folder per component
#: (a repository may also hold single-file checkpoints at its root, e.g. FLUX.1 Kontext's 24 GB one)
PIPELINE_FILES = ["model_index.json", "*/*"]
SKIPPED_FILES = ["*/*.bin", "*/*.onnx", "*/*.onnx_data", "*/*.msgpack", "*/*.h5"]


def missing_weights(method: str, weights: str, detail: str, note: str = "") -> BenchError:
    return BenchError(f"{method} weights {weights!r} are not available ({detail}). Fetch them once with "
                      f"`hf download {weights} --include 'model_index.json' '*/*'`{note} (then "
                      f"HF_HUB_OFFLINE=1 works), or pass --weights /path/to/a/diffusers pipeline folder, or use "
                      f"--preset smoke for random weights")


def resolve_pipeline_folder(method: str, weights: str, note: str = "") -> tuple[Path, str]:
    """(local folder, revision) of a pipeline: an existing folder with model_index.json, or a
    Hugging Face id found in (or fetched into) the hub cache."""
    path = Path(weights).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise BenchError(f"--weights {path} is not a diffusers pipeline folder: model_index.json is missing")
        h = hashlib.sha256()
        for cfg in sorted(path.glob("*.json")) + sorted(path.glob("*/*.json")):
            h.update(cfg.relative_to(path).as_posix().encode() + cfg.read_bytes())
        return path, "sha256:" + h.hexdigest()[:16]
    if weights.count("/") != 1 or weights.startswith((".", "/")):
        raise BenchError(f"--weights {weights!r} is neither an existing folder nor a Hugging Face id")
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(weights, allow_patterns=PIPELINE_FILES, ignore_patterns=SKIPPED_FILES,
                                        local_files_only=_offline()))
    except Exception as exc:  # not cached, offline, gated, network down ...
        raise missing_weights(method, weights, type(exc).__name__, note) from None
    if not (folder / "model_index.json").exists():
        raise missing_weights(method, weights, "no model_index.json in the cached snapshot", note)
    return folder, folder.name


def _pipeline_class_of(folder: Path) -> str | None:
    """The pipeline class a diffusers folder declares (model_index.json), if readable."""
    import json
    try:
        name = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


class InContextMethod:
    family = "in-context"
    tasks = frozenset({"generate"})
    cuda_dtype = "bf16"                  # the runner's default dtype for this method on CUDA
    pipeline_class = ""                  # diffusers class name
    default_weights = ""                 # Hugging Face id of the released pipeline
    tiny_kind = ""                       # key of methods.in_context.tiny.BUILDERS
    fetch_note = ""                      # e.g. how to accept a gated model's license
    default_resolution = 1024
    resolution_multiple = 16             # VAE factor 8 x patch 2: the pipelines refuse or silently resize others
    min_resolution = 16
    batch_requests = True                # False: one pipeline call per request
    download_bytes: int | None = None    # approximate size of the pipeline folder (bench doctor)

    def __init__(self, spec: LoadSpec, name: str, offload: Literal["none", "model", "sequential"] | None = "none",
                 max_subject_images: int | None = None, edit_composite: bool = True, weights_id: str | None = None):
        offload = "none" if offload is None else offload        # --param offload=none parses as None
        if offload not in OFFLOAD:
            raise BenchError(f"--param offload={offload!r}: method {name!r} takes one of {', '.join(OFFLOAD)}")
        InContextMethod.check_params(name, {"max_subject_images": max_subject_images})
        if offload != "none" and not str(spec.device).startswith("cuda"):
            raise BenchError(f"--param offload={offload} needs a CUDA --device (got {spec.device!r}); "
                             f"use offload=none on {spec.device}")
        self.name, self.spec, self.offload = name, spec, offload
        self.max_subject_images = None if max_subject_images is None else int(max_subject_images)
        self.edit_composite, self.weights_id = bool(edit_composite), weights_id
        self.base_weights = weights_id or self.default_weights
        self.resolution = int(spec.resolution or self.default_resolution)
        self.check_resolution(name, self.resolution)
        self.random_weights = spec.preset is not None
        self.pipe, self.model_id, self.revision = self._load(spec)
        self.pipe.set_progress_bar_config(disable=True)
        self._rows = 0
        self.pipe.transformer.register_forward_pre_hook(self._count_rows, with_kwargs=True)
        self._finite = True
        self.pipe.vae.decoder.register_forward_hook(self._check_finite)
        self._encoded: list[list[int]] = []
        self.pipe.vae.encode = self._recording_encode(self.pipe.vae.encode)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def requirements(cls, spec: LoadSpec, **params) -> list:
        """What a run needs on disk (bench/needs.py, `bench doctor`): the pipeline folder."""
        from bench import needs
        if spec.preset is not None:
            return []
        weights = cls.chosen_weights(spec.weights, params.get("weights_id"))
        get = f"hf download {weights} --include 'model_index.json' '*/*'{cls.fetch_note}"
        return [needs.hf_weights(f"{cls.pipeline_class} {weights}", weights,
                                 ("model_index.json", "transformer/*", "vae/*"), cls.download_bytes, get)]

    @classmethod
    def chosen_weights(cls, weights: str | None, weights_id: str | None = None) -> str:
        """--weights when given, else the registration's ``weights_id``, else the class's default."""
        if weights in (None, LoadSpec.weights, cls.default_weights):
            return weights_id or cls.default_weights
        return weights

    @classmethod
    def check_weights(cls, method: str, weights: str | None) -> None:
        """Fail early (before any data is read) when the released weights are not at hand."""
        from bench.registry import METHODS
        weights_id = METHODS.get(method).params.get("weights_id") if method in METHODS else None
        resolve_pipeline_folder(method, cls.chosen_weights(weights, weights_id), cls.fetch_note)

    @classmethod
    def check_params(cls, method: str, params: dict) -> None:
        """Parameter values the pipeline would refuse only after loading, refused at planning
        (bench/plan.py calls this with the effective --param values; the constructor too). An
        adapter that adds checks calls this one first."""
        taken = params.get("max_subject_images")
        if taken is not None and int(taken) < 1:
            raise BenchError(f"--param max_subject_images={taken}: method {method!r} needs at least 1 "
                             "(or none: all of a request's images)")

    @classmethod
    def check_resolution(cls, method: str, resolution: int | None) -> None:
        """--resolution (None: the default) as the pipeline generates it, at planning and in the constructor."""
        if resolution is None:
            return
        if resolution % cls.resolution_multiple or resolution < cls.min_resolution:
            low = max(cls.min_resolution, resolution - resolution % cls.resolution_multiple)
            raise BenchError(f"--resolution {resolution}: method {method!r} generates at multiples of "
                             f"{cls.resolution_multiple} from {cls.min_resolution} px (e.g. {low} or "
                             f"{low + cls.resolution_multiple})")

    #: the most extreme aspect ratio the pipeline takes in a reference image (None: any within bench.limits)
    max_subject_aspect: float | None = None

    @classmethod
    def check_subject_sizes(cls, method: str, params: dict, samples) -> None:
        """A subject image the pipeline would refuse for its shape, refused at planning (bench/plan.py)."""
        if cls.max_subject_aspect is None:
            return
        from PIL import Image as PILImage

        from bench.images import check_image
        taken = params.get("max_subject_images", cls.default_max_subject_images)
        for sample, path in ((s, p) for s in samples for p in s.subject_images[:taken]):
            check_image(path)                 # one line if it is no image (decoded once per process)
            with PILImage.open(path) as image:
                w, h = image.size
            if max(w / h, h / w) > cls.max_subject_aspect:
                raise BenchError(f"{sample.cell}: subject image {path} is {w}x{h} px; method {method!r} takes "
                                 f"reference images up to {cls.max_subject_aspect:g}:1 ({cls.pipeline_class} refuses "
                                 f"more): crop it, or leave subject {sample.subject!r} out with --subjects")

    @classmethod
    def subject_images_taken(cls, params: dict) -> int | None:
        """How many subject images a request hands to the pipeline (None: all); bench/plan.py refuses a
        suite whose items hold more different subjects than that (OmniContext) before generating."""
        return params.get("max_subject_images", cls.default_max_subject_images)

    default_max_subject_images: int | None = None

    def _load(self, spec: LoadSpec):
        import diffusers
        if spec.preset == "tiny":
            from methods.in_context.tiny import tiny_pipeline_folder
            folder, model_id, revision = tiny_pipeline_folder(self.tiny_kind), "preset:tiny", "random"
        elif spec.preset is not None:
            raise BenchError(f"method {self.name!r} has no {spec.preset!r} preset; use --preset smoke or tiny")
        else:
            model_id = self.chosen_weights(spec.weights, self.weights_id)
            folder, revision = resolve_pipeline_folder(self.name, model_id, self.fetch_note)
        held = _pipeline_class_of(folder)
        if held not in (None, self.pipeline_class):
            raise BenchError(f"--weights {model_id}: the folder holds a {held} (model_index.json), method "
                             f"{self.name!r} needs a {self.pipeline_class} ({self.base_weights})")
        try:
            pipe = getattr(diffusers, self.pipeline_class).from_pretrained(folder, dtype=DTYPES[spec.dtype])
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if Path(model_id).expanduser().exists():       # a local folder: nothing to download
                raise BenchError(f"--weights {model_id}: cannot load it as a {self.pipeline_class} folder "
                                 f"({detail}); it needs every component of {self.base_weights} in "
                                 "diffusers layout") from None
            raise missing_weights(self.name, model_id, detail, self.fetch_note) from None
        if self.offload == "model":
            pipe.enable_model_cpu_offload(device=spec.device)
        elif self.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=spec.device)
        else:
            pipe.to(spec.device)
        return pipe, model_id, revision

    def _count_rows(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        self._rows += int(hidden.shape[0])

    def _recording_encode(self, encode):
        """``vae.encode`` that notes the (width, height) of every image it encodes."""
        def wrapped(x, *args, **kwargs):
            self._encoded += [[int(x.shape[-1]), int(x.shape[-2])]] * int(x.shape[0])
            return encode(x, *args, **kwargs)
        return wrapped

    def _check_finite(self, module, args, output):
        """Notes a decoded image with NaN/inf pixels (e.g. a guidance scale so large that the
        latents overflow): the pipeline would cast it silently to a black image."""
        self._finite = self._finite and bool(torch.isfinite(output).all())

    def describe(self) -> dict:
        dtype = str(self.pipe.transformer.dtype).replace("torch.", "")
        model = {"model_id": self.model_id, "revision": self.revision, "random_weights": self.random_weights,
                 "base_model": self.base_weights, "pipeline": self.pipeline_class, "dtype": dtype,
                 "resolution": self.resolution,
                 "transformer_parameters": sum(p.numel() for p in self.pipe.transformer.parameters())}
        params = {"offload": self.offload, "max_subject_images": self.max_subject_images,
                  "edit_composite": self.edit_composite, "resolution": self.resolution,
                  "input_preprocessing": self.input_preprocessing(), **self.params()}
        if self.weights_id:
            params["weights_id"] = self.weights_id
        return {"params": params, "model": model, "adapter": None,
                "weights_status": "random weights" if self.random_weights else "pretrained"}

    def params(self) -> dict:
        """The adapter's own parameters for run.json."""
        return {}

    def input_preprocessing(self) -> str:
        """What happens to a subject image before the pipeline sees it (run.json)."""
        return "loaded upright as RGB, aspect ratio kept; the pipeline's own preprocessing sizes it"

    # ---- generation ------------------------------------------------------------------------
    def image(self, path: Path) -> Image.Image:
        """An image file upright, RGB, resized to the output size: the canvas of an edit (decoded per
        call: at 1024 px a cache of every DreamEdit source would hold gigabytes, and decoding is cheap
        next to sampling)."""
        return load_rgb(Path(path)).resize((self.resolution, self.resolution), Image.BICUBIC)

    def prepare_subject(self, image: Image.Image) -> Image.Image:
        """A subject image (upright RGB, its own size) as this pipeline's preprocessing expects it."""
        return image

    def group_key(self, request: GenRequest, subjects: list[Image.Image]) -> object:
        """Requests with equal keys may share one pipeline call (when ``batch_requests``)."""
        return request.task

    @torch.no_grad()
    def generate(self, requests: Sequence[GenRequest]) -> list[Image.Image]:
        """One image per request, in order; requests of one task share a pipeline call (or one
        call each when ``batch_requests`` is False)."""
        groups: dict[object, list[int]] = {}
        prepared: list[list[Image.Image]] = []
        for i, r in enumerate(requests):
            if r.task not in self.tasks:
                raise BenchError(f"{self.name} cannot do the '{r.task}' task of request {r.key}")
            prepared.append([self.prepare_subject(load_rgb(Path(p))) for p in r.subject_images[:self.max_subject_images]])
            groups.setdefault(self.group_key(r, prepared[i]) if self.batch_requests else i, []).append(i)
        out: list[Image.Image | None] = [None] * len(requests)
        for index in groups.values():
            batch = [requests[i] for i in index]
            subjects = [prepared[i] for i in index]
            sources = [self.image(r.source_image) if r.source_image is not None else None for r in batch]
            rows_before, self._finite, self._encoded = self._rows, True, []
            images = self.run(batch, subjects, sources, request_generators([r.seed for r in batch]))
            if not self._finite:
                scales = {k: v for k, v in self.params().items() if "scale" in k}
                raise BenchError(f"{self.name} decoded non-finite pixels (NaN/inf) for request {batch[0].key} with "
                                 f"{scales} in {self.pipe.transformer.dtype}: the latents overflowed; use smaller "
                                 f"guidance scales (--param)")
            calls = (self._rows - rows_before) // len(batch)
            for i, r, image, source in zip(index, batch, images, sources):
                image = image.convert("RGB").resize((self.resolution, self.resolution), Image.BICUBIC) \
                    if image.size != (self.resolution, self.resolution) else image.convert("RGB")
                if source is not None and r.mask is not None and self.edit_composite:
                    image = composite(image, source, r.mask)
                image.info["bench"] = {"transformer_calls": calls, "vae_inputs": self._vae_inputs(len(batch))}
                out[i] = image
        return out

    def _vae_inputs(self, n_requests: int) -> list[list[int]]:
        """The sizes encoded for one request of a call (a batched call encodes every row alike)."""
        if n_requests == 1 or len(self._encoded) % n_requests:
            return list(self._encoded)
        return self._encoded[:len(self._encoded) // n_requests]

    def run(self, batch: Sequence[GenRequest], subjects: list[list[Image.Image]],
            sources: list[Image.Image | None], generators: list[torch.Generator]) -> list[Image.Image]:
        raise NotImplementedError


def composite(generated: Image.Image, source: Image.Image, mask_path: Path) -> Image.Image:
    """The generated image inside the mask (white = region to edit), the source outside it."""
    mask = load_mask_tensor(Path(mask_path), generated.size[0])[0].numpy()[..., None]
    blended = np.asarray(generated, dtype=np.float32) * mask + np.asarray(source, dtype=np.float32) * (1 - mask)
    return Image.fromarray(blended.round().astype(np.uint8))
