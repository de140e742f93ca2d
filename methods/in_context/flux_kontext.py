"""FLUX.1 Kontext [dev] (Black Forest Labs 2025, arXiv:2506.15742) through diffusers'
``FluxKontextPipeline`` (registered as ``flux-kontext``; docs/methods-in-context.md).

Input mapping: Kontext takes one conditioning image, so the request's first subject image is it
and the suite's prompt is the instruction (``prompt_template``, default the prompt as it is). The
conditioning image is resized to the output size; at the default 1024 px this is the square
Kontext resolution the pipeline's own auto-resize picks (``PREFERRED_KONTEXT_RESOLUTIONS``).
A batch of requests is one pipeline call with one image and one generator per request: the
pipeline encodes each row's image on its own (VAE mode) and draws each row's noise from its own
generator. No editing task: the pipeline has room for the source image or the subject, not both.

Defaults: ``guidance_scale=2.5`` (the pipeline's usage example), 28 steps
(``FluxKontextPipeline.__call__``), 1024 x 1024 output (``max_area=1024**2``). The [dev] model is
guidance-distilled: one transformer call per step.
"""

from __future__ import annotations

from bench import BenchError
from methods.in_context.base import InContextMethod


class FluxKontextMethod(InContextMethod):
    pipeline_class = "FluxKontextPipeline"
    default_weights = "black-forest-labs/FLUX.1-Kontext-dev"
    tiny_kind = "flux-kontext"
    fetch_note = (" (a gated model: accept its license on the Hugging Face page and `hf auth login` first)")
    forwards_params_to = "methods.in_context.base:InContextMethod"
    download_bytes = 34_000_000_000           # bf16 files: parameters x 2 (docs/methods-in-context.md, "Memory")

    def __init__(self, spec, name: str = "flux-kontext", num_inference_steps: int = 28, guidance_scale: float = 2.5,
                 prompt_template: str = "{prompt}", max_sequence_length: int = 512, **common):
        if common.get("max_subject_images", 1) != 1:
            raise BenchError(f"--param max_subject_images: method {name!r} takes exactly one conditioning image")
        super().__init__(spec, name, **common)
        self.num_inference_steps = int(spec.num_inference_steps or num_inference_steps)
        self.guidance_scale, self.prompt_template = float(guidance_scale), str(prompt_template)
        self.max_sequence_length = int(max_sequence_length)

    def params(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "prompt_template": self.prompt_template, "max_sequence_length": self.max_sequence_length,
                "conditioning_image": "first subject image, resized to the output size"}

    def run(self, batch, subjects, sources, generators):
        prompts = [self.prompt_template.format(prompt=r.prompt, class_noun=r.class_noun) for r in batch]
        return self.pipe(image=[images[0] for images in subjects], prompt=prompts, height=self.resolution,
                         width=self.resolution, max_area=self.resolution ** 2, _auto_resize=False,
                         num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                         max_sequence_length=self.max_sequence_length, generator=generators).images
