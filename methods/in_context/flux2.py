"""FLUX.2 [dev] (Black Forest Labs 2025) through diffusers' ``Flux2Pipeline`` (registered as
``flux2``; docs/methods-in-context.md).

Input mapping: ``Flux2Pipeline(image=[...], prompt=...)`` takes a list of reference images and
the instruction; all of a request's subject images are the list (``max_subject_images`` limits
it), the suite's prompt the instruction (``prompt_template``, default the prompt as it is). The
pipeline's text encoder (Mistral Small 3.2) reads the prompt in its chat format with the
pipeline's system message; the reference images reach the transformer as VAE tokens after the
image's own tokens.

Inputs: each image at its own size and aspect ratio; the pipeline scales an image larger than
1024^2 pixels down to that area (``Flux2ImageProcessor._resize_to_target_area``) and crops it to
multiples of 16. Here the area follows the output size (resolution^2: the same at 1024 px; the
same function is applied first at other sizes, so small test runs stay small; an image then
under 64 px a side, which the pipeline refuses, is scaled up to 64, aspect kept); ``vae_inputs``
records each size.

Defaults, from the model card (huggingface.co/black-forest-labs/FLUX.2-dev, its diffusers
example) and equal to ``Flux2Pipeline.__call__``'s own: 50 steps (the card notes 28 as a good
trade-off), ``guidance_scale=4`` (embedded guidance: FLUX.2 [dev] is guidance-distilled, one
transformer call per step), 1024 x 1024;
``max_sequence_length=512`` and text-encoder layers (10, 20, 30) as ``Flux2Pipeline.__call__``.

One request per pipeline call: the pipeline gives every prompt of a batch the same reference
images (it repeats one image list over the batch).
"""

from __future__ import annotations

from PIL import Image

from bench import BenchError
from methods.in_context.base import InContextMethod

MAX_SEQUENCE_LENGTH = 512
MIN_SIDE = 64                                # Flux2ImageProcessor.check_image_input's smallest side


class Flux2Method(InContextMethod):
    pipeline_class = "Flux2Pipeline"
    default_weights = "black-forest-labs/FLUX.2-dev"
    tiny_kind = "flux2"
    fetch_note = (" (a gated model: accept its license on the Hugging Face page and `hf auth login` first)")
    batch_requests = False
    forwards_params_to = "methods.in_context.base:InContextMethod"
    max_subject_aspect = 8.0                  # Flux2ImageProcessor.check_image_input's max_aspect_ratio
    download_bytes = 112_000_000_000          # bf16: 32B transformer + 24B Mistral text encoder, x 2 bytes

    def __init__(self, spec, name: str = "flux2", num_inference_steps: int = 50, guidance_scale: float = 4.0,
                 prompt_template: str = "{prompt}", max_sequence_length: int = MAX_SEQUENCE_LENGTH, **common):
        self.check_params(name, {"max_sequence_length": max_sequence_length, **common})
        super().__init__(spec, name, **common)
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale, self.prompt_template = float(guidance_scale), str(prompt_template)
        self.max_sequence_length = int(max_sequence_length)

    @classmethod
    def check_params(cls, method: str, params: dict) -> None:
        super().check_params(method, params)
        length = params.get("max_sequence_length", MAX_SEQUENCE_LENGTH)
        if not 1 <= int(length) <= 4096:
            raise BenchError(f"--param max_sequence_length={length}: method {method!r} takes 1 to 4096")

    def params(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "prompt_template": self.prompt_template, "max_sequence_length": self.max_sequence_length,
                "reference_area": self.resolution ** 2}

    def input_preprocessing(self) -> str:
        return (f"own size and aspect ratio; above {self.resolution ** 2} px (resolution^2; the pipeline's "
                "1024^2) scaled down to that area by Flux2ImageProcessor._resize_to_target_area, then cropped by "
                "the pipeline to multiples of 16; a side under 64 px (the pipeline's minimum) scaled up to 64")

    def prepare_subject(self, image):
        area = self.resolution ** 2
        if image.size[0] * image.size[1] > area:
            image = self.pipe.image_processor._resize_to_target_area(image, area)
        short = min(image.size)
        if short < MIN_SIDE:                  # the pipeline refuses an image with a side under 64 px
            scale = MIN_SIDE / short
            image = image.resize((max(MIN_SIDE, round(image.size[0] * scale)), max(MIN_SIDE, round(image.size[1] * scale))),
                                 Image.LANCZOS)
        return image

    def run(self, batch, subjects, sources, generators):
        (request,), (images,) = batch, subjects
        prompt = self.prompt_template.format(prompt=request.prompt, class_noun=request.class_noun)
        return self.pipe(image=list(images), prompt=prompt, height=self.resolution, width=self.resolution,
                         num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                         max_sequence_length=self.max_sequence_length, generator=generators).images
