"""In-context baselines (OmniGen, FLUX.1 Kontext, Qwen-Image-Edit) through diffusers pipelines;
docs/methods-in-context.md."""
