"""FLUX.1 Kontext [dev] (Black Forest Labs 2025, arXiv:2506.15742) through diffusers'
``FluxKontextPipeline`` (registered as ``flux-kontext``; docs/methods-in-context.md).

Input mapping: Kontext takes one conditioning image, so the request's first subject image is it
and the suite's prompt is the instruction (``prompt_template``, default the prompt as it is). A
suite whose items hold several different subjects (OmniContext) is refused at planning; select
its single-image task types. No editing task: the pipeline has room for the source image or the
subject, not both.

Inputs: the pipeline's own pick, not a square resize. ``FluxKontextPipeline`` (``_auto_resize``,
default True) resizes the conditioning image to the entry of ``PREFERRED_KONTEXT_RESOLUTIONS``
(the sizes Kontext was trained at, about 1024^2 pixels) whose aspect ratio is closest to the
image's. Here the same pick is made by the same rule with that list scaled by resolution/1024
(identical at the default 1024 px; 64 px-class sizes at the smoke preset) and the image resized
with the pipeline's own ``image_processor.resize``; the pipeline is then called with
``_auto_resize=False`` (the image already has its size) and ``max_area=resolution**2``. A batch
holds requests whose conditioning images got the same size (the pipeline sizes a batch by its
first image). run.json's ``input_preprocessing`` says so; ``vae_inputs`` records each size.

Defaults: ``guidance_scale=2.5`` (the pipeline's usage example), 28 steps
(``FluxKontextPipeline.__call__``), 1024 x 1024 output (``max_area=1024**2``),
``max_sequence_length=512`` (the T5 encoder's limit: the pipeline refuses more, here at planning).
The [dev] model is guidance-distilled: one transformer call per step.
"""

from __future__ import annotations

from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

from bench import BenchError
from methods.in_context.base import InContextMethod

MAX_SEQUENCE_LENGTH = 512
#: the pipeline's list of (width, height), as this diffusers release ships it
KONTEXT_SIZES = tuple(PREFERRED_KONTEXT_RESOLUTIONS)


def preferred_size(width: int, height: int, resolution: int, multiple: int = 16) -> tuple[int, int]:
    """The pipeline's ``_auto_resize`` pick for an image of this size, the list scaled to ``resolution``."""
    ratio = width / height
    sizes = [(w * resolution // 1024, h * resolution // 1024) for w, h in KONTEXT_SIZES]
    _, w, h = min((abs(ratio - w / h), w, h) for w, h in sizes)
    return max(multiple, w // multiple * multiple), max(multiple, h // multiple * multiple)


class FluxKontextMethod(InContextMethod):
    pipeline_class = "FluxKontextPipeline"
    default_weights = "black-forest-labs/FLUX.1-Kontext-dev"
    tiny_kind = "flux-kontext"
    fetch_note = (" (a gated model: accept its license on the Hugging Face page and `hf auth login` first)")
    forwards_params_to = "methods.in_context.base:InContextMethod"
    download_bytes = 34_000_000_000           # bf16 files: parameters x 2 (docs/methods-in-context.md, "Memory")
    default_max_subject_images = 1

    def __init__(self, spec, name: str = "flux-kontext", num_inference_steps: int = 28, guidance_scale: float = 2.5,
                 prompt_template: str = "{prompt}", max_sequence_length: int = MAX_SEQUENCE_LENGTH, **common):
        common.setdefault("max_subject_images", 1)
        self.check_params(name, {"max_sequence_length": max_sequence_length, **common})
        super().__init__(spec, name, **common)
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale, self.prompt_template = float(guidance_scale), str(prompt_template)
        self.max_sequence_length = int(max_sequence_length)

    @classmethod
    def check_params(cls, method: str, params: dict) -> None:
        if params.get("max_subject_images", 1) != 1:
            raise BenchError(f"--param max_subject_images: method {method!r} takes exactly one conditioning image")
        length = params.get("max_sequence_length", MAX_SEQUENCE_LENGTH)
        if not 1 <= int(length) <= MAX_SEQUENCE_LENGTH:
            raise BenchError(f"--param max_sequence_length={length}: method {method!r} takes 1 to "
                             f"{MAX_SEQUENCE_LENGTH} (the T5 text encoder's limit; FluxKontextPipeline refuses more)")

    @classmethod
    def subject_images_taken(cls, params: dict) -> int:
        return 1

    def params(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "prompt_template": self.prompt_template, "max_sequence_length": self.max_sequence_length,
                "_auto_resize": False, "max_area": self.resolution ** 2}

    def input_preprocessing(self) -> str:
        return ("first subject image at the FluxKontextPipeline _auto_resize pick (PREFERRED_KONTEXT_RESOLUTIONS "
                f"entry of the closest aspect ratio, the list scaled by {self.resolution}/1024), resized by the "
                f"pipeline's image_processor; called with _auto_resize=False, max_area={self.resolution ** 2}")

    def prepare_subject(self, image):
        width, height = preferred_size(*image.size, self.resolution, self.resolution_multiple)
        return self.pipe.image_processor.resize(image, height, width)

    def group_key(self, request, subjects):
        return request.task, subjects[0].size

    def run(self, batch, subjects, sources, generators):
        prompts = [self.prompt_template.format(prompt=r.prompt, class_noun=r.class_noun) for r in batch]
        return self.pipe(image=[images[0] for images in subjects], prompt=prompts, height=self.resolution,
                         width=self.resolution, max_area=self.resolution ** 2, _auto_resize=False,
                         num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                         max_sequence_length=self.max_sequence_length, generator=generators).images
