"""Qwen-Image-Edit-2509 (Qwen team 2025, arXiv:2508.02324) through diffusers'
``QwenImageEditPlusPipeline`` (registered as ``qwen-image-edit``; docs/methods-in-context.md).

Input mapping: the pipeline takes an image list and writes ``Picture k:`` before each image in
the Qwen2.5-VL prompt, so all of a request's subject images are the list (``max_subject_images``
limits it) and the suite's prompt the instruction (``prompt_template``). Editing: the list is
[source, subject images] and the instruction names them by their pictures; the output is
composited back into the source outside the mask.

Inputs: each image at its own size and aspect ratio; the pipeline sizes it twice by its area
rule (``calculate_dimensions``: the aspect ratio kept, sides multiples of 32), for the VAE at a
1024^2 area and for Qwen2.5-VL at a 384^2 area (module constants). Here both areas follow the
output size (1024^2 and 384^2 at the default 1024 px, scaled with ``--resolution``), so small test
runs stay small (a narrow image whose side would round to 0 px gets the least area that keeps it,
``area_for``); the sizes encoded are recorded per image (``vae_inputs``).

Defaults: ``settings=card`` (the default) is the model card's example for Qwen-Image-Edit-2509 and
-2511 (huggingface.co/Qwen/Qwen-Image-Edit-2509, "Quick Start"): 40 steps, ``true_cfg_scale=4.0``,
negative prompt ``" "`` (an empty negative prompt is what turns classifier-free guidance on),
``guidance_scale=1.0`` (unused: these transformers are not guidance-distilled).
``settings=pipeline`` is ``QwenImageEditPlusPipeline.__call__``'s defaults: 50 steps, the same
``true_cfg_scale=4.0`` (its signature's default; its docstring says 1.0, which is not what it
does). ``num_inference_steps`` (or ``--steps``) overrides either. 1024 x 1024 output.

Variants: ``qwen-image-edit`` loads Qwen/Qwen-Image-Edit-2509, ``qwen-image-edit-2511`` the same
class with Qwen/Qwen-Image-Edit-2511's weights (a registration with ``weights_id``).

One request per pipeline call: the pipeline refuses batches (``batch_size > 1``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Literal

from bench import BenchError
from methods.in_context.base import InContextMethod

#: named settings: the model card's example and the pipeline's own defaults
SETTINGS = {"card": {"num_inference_steps": 40}, "pipeline": {"num_inference_steps": 50}}
EDIT_TEMPLATE = "Put the {class_noun} from {pictures} into Picture 1, keeping everything else unchanged."


@contextmanager
def image_areas(vae_area: int, condition_area: int):
    """The pipeline's VAE and vision-encoder image areas for the duration of one call."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as module
    if not all(hasattr(module, name) for name in ("VAE_IMAGE_SIZE", "CONDITION_IMAGE_SIZE")):
        raise BenchError("this diffusers' QwenImageEditPlusPipeline has no VAE_IMAGE_SIZE / CONDITION_IMAGE_SIZE: "
                         "install the pinned diffusers (pyproject.toml, docs/methods-in-context.md)")
    saved = module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE
    module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = vae_area, condition_area
    try:
        yield
    finally:
        module.VAE_IMAGE_SIZE, module.CONDITION_IMAGE_SIZE = saved


class QwenImageEditMethod(InContextMethod):
    pipeline_class = "QwenImageEditPlusPipeline"
    default_weights = "Qwen/Qwen-Image-Edit-2509"
    tiny_kind = "qwen-image-edit"
    tasks = frozenset({"generate", "edit"})
    batch_requests = False
    forwards_params_to = "methods.in_context.base:InContextMethod"
    min_resolution = 48                       # the vision encoder's image side (3/8 of it) must round to >= 32 px
    download_bytes = 58_000_000_000           # bf16 files: parameters x 2 (docs/methods-in-context.md, "Memory")

    def __init__(self, spec, name: str = "qwen-image-edit", settings: Literal["card", "pipeline"] = "card",
                 num_inference_steps: int | None = None, true_cfg_scale: float = 4.0, negative_prompt: str = " ",
                 prompt_template: str = "{prompt}", edit_template: str = EDIT_TEMPLATE, **common):
        self.check_params(name, {"true_cfg_scale": true_cfg_scale, "settings": settings, **common})
        super().__init__(spec, name, **common)
        self.settings = settings
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps
                                       or SETTINGS[settings]["num_inference_steps"])
        self.true_cfg_scale, self.negative_prompt = float(true_cfg_scale), str(negative_prompt)
        self.prompt_template, self.edit_template = str(prompt_template), str(edit_template)
        self.vae_area = self.resolution ** 2
        self.condition_area = round(384 * self.resolution / 1024) ** 2

    @classmethod
    def check_params(cls, method: str, params: dict) -> None:
        super().check_params(method, params)
        scale = params.get("true_cfg_scale", 4.0)
        if not float(scale) >= 1:          # the pipeline runs unguided below 1 (true_cfg_scale > 1 only)
            raise BenchError(f"--param true_cfg_scale={scale}: method {method!r} needs at least 1 "
                             f"(1 = no guidance; QwenImageEditPlusPipeline ignores the negative prompt below 1)")
        if params.get("settings", "card") not in SETTINGS:
            raise BenchError(f"--param settings={params['settings']!r}: method {method!r} takes one of "
                             f"{', '.join(SETTINGS)}")

    def params(self) -> dict:
        return {"settings": self.settings, "num_inference_steps": self.num_inference_steps,
                "true_cfg_scale": self.true_cfg_scale,
                "negative_prompt": self.negative_prompt, "prompt_template": self.prompt_template,
                "edit_template": self.edit_template, "vae_image_area": self.vae_area,
                "condition_image_area": self.condition_area}

    def input_preprocessing(self) -> str:
        return ("own size and aspect ratio; QwenImageEditPlusPipeline's calculate_dimensions sizes each image to "
                f"a {self.vae_area} px area for the VAE and {self.condition_area} px for Qwen2.5-VL "
                "(1024^2 and 384^2 x (resolution/1024)^2), aspect ratio kept; an image so narrow that a side "
                "would round to 0 px (only below about 136 px output) gets the area whose short side is 24 px")

    def instruction(self, request, n_subjects: int) -> str:
        if request.task == "edit":
            pictures = " and ".join(f"Picture {k}" for k in range(2, 2 + n_subjects))
            return self.edit_template.format(class_noun=request.class_noun, pictures=pictures, prompt=request.prompt)
        return self.prompt_template.format(prompt=request.prompt, class_noun=request.class_noun)

    @staticmethod
    def area_for(area: int, images) -> int:
        """``area``, unless the pipeline's rule (sides rounded to multiples of 32) would give an image a
        0 px side, which PIL refuses (a narrow image at a small resolution): then the area whose
        short side is 24 px, rounded to 32."""
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_dimensions

        ratios = [w / h for w, h in (image.size for image in images)]
        if all(min(calculate_dimensions(area, r)) > 0 for r in ratios):
            return area
        return max(area, math.ceil(24 ** 2 / min(min(r, 1 / r) for r in ratios)))

    def run(self, batch, subjects, sources, generators):
        (request,), (images,), (source,) = batch, subjects, sources
        inputs = ([source] if source is not None else []) + images
        with image_areas(*(self.area_for(area, inputs) for area in (self.vae_area, self.condition_area))):
            return self.pipe(image=inputs, prompt=self.instruction(request, len(images)),
                             negative_prompt=self.negative_prompt, true_cfg_scale=self.true_cfg_scale,
                             height=self.resolution, width=self.resolution,
                             num_inference_steps=self.num_inference_steps, generator=generators).images
