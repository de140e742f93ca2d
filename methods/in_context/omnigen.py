"""OmniGen (Xiao et al. 2024, arXiv:2409.11340) through diffusers' ``OmniGenPipeline``
(registered as ``omnigen``; docs/methods-in-context.md).

Input mapping: the subject image(s) go in OmniGen's own placeholder syntax,
``<img><|image_1|></img>`` ... (the pipeline replaces ``<|image_k|>`` by the k-th image's VAE
tokens); a request hands over all of its images by default (``max_subject_images`` limits it).
One image: ``{prompt}. The {class_noun} is in {images}.``, modelled on the subject example of the
OmniGen README ("... The man is the right man in <img><|image_1|></img>."); several (OmniContext's
items, whose instructions say "image 1", "image 2"): ``{prompt}. The images, in order: {images}.``
Both templates must hold ``{images}`` (refused at planning otherwise: the images would never reach
the model). Editing: the source image is image 1, the subject images follow, and the instruction
follows the source as in the README's editing examples; the output takes the source's size
(``use_input_image_size_as_output``) and is composited back outside the mask.

Inputs: each subject image is passed at its own size and aspect ratio; OmniGen's processor
(``OmniGenMultiModalProcessor``) scales it so that its longer side is at most
``max_input_image_size`` and crops it to multiples of 16. ``max_input_image_size`` follows the
output size (1024 at 1024 px, as the README; 64 at the smoke preset's 64 px). The size that
reached the VAE is recorded per image (``vae_inputs``).

Defaults (``OmniGenPipeline.__call__`` and the README): 50 steps, ``guidance_scale=2.5``,
``img_guidance_scale=1.6``, 1024 px, input images at most 1024 px.

One request per pipeline call: diffusers' OmniGen transformer computes the rotary positions of
the whole batch from its first row, so in a batch of requests with different prompt lengths a
request's output would depend on the first request. The pipeline samples the input images'
VAE posterior from the global random state; here each request's draw comes from its own
generator (seeded from the request), so the same request gives the same bytes in any batch.
"""

from __future__ import annotations

from types import MethodType

import torch

from bench import BenchError
from methods.in_context.base import InContextMethod

GENERATE_TEMPLATE = "{prompt}. The {class_noun} is in {images}."
MULTI_TEMPLATE = "{prompt}. The images, in order: {images}."
EDIT_TEMPLATE = "{source} Put the {class_noun} in {images} into this image, keeping everything else unchanged."


def placeholders(first: int, count: int) -> str:
    return " ".join(f"<img><|image_{k}|></img>" for k in range(first, first + count))


class OmniGenMethod(InContextMethod):
    pipeline_class = "OmniGenPipeline"
    default_weights = "Shitao/OmniGen-v1-diffusers"
    tiny_kind = "omnigen"
    tasks = frozenset({"generate", "edit"})
    batch_requests = False
    forwards_params_to = "methods.in_context.base:InContextMethod"
    download_bytes = 7_700_000_000            # bf16 files: parameters x 2 (docs/methods-in-context.md, "Memory")

    def __init__(self, spec, name: str = "omnigen", num_inference_steps: int = 50, guidance_scale: float = 2.5,
                 img_guidance_scale: float = 1.6, max_input_image_size: int = 1024,
                 prompt_template: str = GENERATE_TEMPLATE, multi_prompt_template: str = MULTI_TEMPLATE,
                 edit_template: str = EDIT_TEMPLATE, **common):
        self.check_params(name, {"prompt_template": prompt_template, "multi_prompt_template": multi_prompt_template,
                                 "edit_template": edit_template, "max_input_image_size": max_input_image_size})
        super().__init__(spec, name, **common)
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale, self.img_guidance_scale = float(guidance_scale), float(img_guidance_scale)
        self.max_input_image_size = int(max_input_image_size)
        #: the processor's bound at this output size (the README's 1024 at 1024 px)
        self.input_image_size = max(16, round(self.max_input_image_size * self.resolution / 1024))
        self.prompt_template, self.multi_prompt_template = str(prompt_template), str(multi_prompt_template)
        self.edit_template = str(edit_template)
        self._image_generator: torch.Generator | None = None
        self.pipe.encode_input_images = MethodType(_encode_with_generator(self), self.pipe)

    @classmethod
    def check_params(cls, method: str, params: dict) -> None:
        super().check_params(method, params)
        for key in ("prompt_template", "multi_prompt_template", "edit_template"):
            if key in params and "{images}" not in str(params[key]):
                raise BenchError(f"--param {key}={params[key]!r}: method {method!r} needs the placeholder "
                                 "{images} in it (where the subject images enter the prompt)")
        if "edit_template" in params and "{source}" not in str(params["edit_template"]):
            raise BenchError(f"--param edit_template={params['edit_template']!r}: method {method!r} needs the "
                             "placeholder {source} in it (where the image to edit enters the prompt)")
        if int(params.get("max_input_image_size", 16)) < 16:
            raise BenchError(f"--param max_input_image_size={params['max_input_image_size']}: at least 16")

    def params(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "img_guidance_scale": self.img_guidance_scale, "max_input_image_size": self.max_input_image_size,
                "input_image_size": self.input_image_size, "prompt_template": self.prompt_template,
                "multi_prompt_template": self.multi_prompt_template, "edit_template": self.edit_template}

    def input_preprocessing(self) -> str:
        return (f"own size and aspect ratio; OmniGen's processor scales the longer side to at most "
                f"{self.input_image_size} px (max_input_image_size {self.max_input_image_size} x resolution/1024) "
                "and crops to multiples of 16; the size encoded is recorded per image (vae_inputs)")

    def instruction(self, request, n_subjects: int) -> str:
        if request.task == "edit":
            return self.edit_template.format(source=placeholders(1, 1), images=placeholders(2, n_subjects),
                                             class_noun=request.class_noun, prompt=request.prompt)
        template = self.prompt_template if n_subjects == 1 else self.multi_prompt_template
        return template.format(prompt=request.prompt.rstrip(". "), class_noun=request.class_noun,
                               images=placeholders(1, n_subjects))

    def run(self, batch, subjects, sources, generators):
        (request,), (images,), (source,) = batch, subjects, sources
        self._image_generator = torch.Generator("cpu").manual_seed(image_seed(request.seed))
        inputs = ([source] if source is not None else []) + images
        return self.pipe([self.instruction(request, len(images))], input_images=[inputs], height=self.resolution,
                         width=self.resolution, num_inference_steps=self.num_inference_steps,
                         guidance_scale=self.guidance_scale, img_guidance_scale=self.img_guidance_scale,
                         max_input_image_size=self.input_image_size,
                         use_input_image_size_as_output=source is not None, generator=generators).images


def image_seed(seed: int) -> int:
    """The seed of a request's input-image posterior draws: distinct from its noise seed."""
    return (int(seed) * 2_654_435_761 + 97) % (2 ** 63)


def _encode_with_generator(method: OmniGenMethod):
    """``OmniGenPipeline.encode_input_images`` with the posterior sample drawn on the CPU from the
    current request's generator instead of the global random state."""
    def encode_input_images(pipe, input_pixel_values, device=None, dtype=None):
        device, dtype = device or pipe._execution_device, dtype or pipe.vae.dtype
        latents = []
        for pixels in input_pixel_values:
            posterior = pipe.vae.encode(pixels.to(device, dtype)).latent_dist
            eps = torch.randn(posterior.mean.shape, generator=method._image_generator, dtype=torch.float32)
            sample = posterior.mean + posterior.std * eps.to(posterior.mean.device, posterior.mean.dtype)
            latents.append(sample * pipe.vae.config.scaling_factor)
        return latents
    return encode_input_images
