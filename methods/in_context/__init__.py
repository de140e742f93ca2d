"""In-context baselines (OmniGen, FLUX.1 Kontext, Qwen-Image-Edit 2509/2511, FLUX.2) through diffusers
pipelines; docs/methods-in-context.md."""
