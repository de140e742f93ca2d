"""Lazy name -> "module:attr" registries for methods, suites and metrics.

Nothing heavy is imported until an entry is loaded. Variants are registrations of the same
target with different parameters. Third-party methods register through the ``bench.methods``
entry-point group::

    [project.entry-points."bench.methods"]
    my-method = "my_package.module:MyMethod"
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Mapping

from bench import BenchError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str                      # "package.module:attr"
    description: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise BenchError(f"'{self.name}' needs module {exc.name!r}, which is not installed") from exc
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise BenchError(f"'{self.name}': {module_name} has no attribute {attr!r}") from exc


class Registry:
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._group = entry_point_group
        self._plugins_loaded = False

    def add(self, name: str, target: str, description: str, **params: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, description, dict(params))

    def _load_plugins(self) -> None:
        if self._plugins_loaded or self._group is None:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self._group):
            if ep.name not in self._entries:
                doc = f"plugin from {ep.value}"
                self._entries[ep.name] = Entry(ep.name, ep.value, doc)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        self._load_plugins()
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BenchError(f"unknown {self.kind} {name!r}{hint} (see `python -m bench ls`)")

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries


METHODS = Registry("method", entry_point_group="bench.methods")
SUITES = Registry("suite")
METRICS = Registry("metric")

# ---- methods ------------------------------------------------------------------------------
_EZ = "methods.ezigen:EZIGenMethod"
METHODS.add("sd", "methods.sd:StableDiffusionMethod",
            "plain Stable Diffusion with the class-noun prompt (text-only baseline)")
METHODS.add("ezigen", _EZ, "EZIGen: decoupled layout/appearance, iterative transfer (paper default)")
METHODS.add("ezigen-allstep", _EZ, "EZIGen ablation: adapter on for every step, one pass (Tab. 5 line 1)",
            schedule="allstep", iterative=False)
METHODS.add("ezigen-decoupled", _EZ, "EZIGen ablation: decoupled, one pass, no loops (Tab. 5 line 2)",
            iterative=False)
for _t in (100, 300, 500, 800):
    METHODS.add(f"ezigen-ref-t{_t}", _EZ, f"EZIGen with the reference UNet at t={_t} (Tab. 7)",
                reference_timestep=_t)
METHODS.add("ezigen-ref-adaptive", _EZ,
            "EZIGen, reference UNet re-encoded at the main UNet's timestep each step (Tab. 7)",
            reference_timestep="adaptive")
METHODS.add("ezigen-ref-trained-adaptive", _EZ,
            "EZIGen with a trained reference UNet, adaptive timestep (Tab. 7)",
            reference_timestep="adaptive", reference_trained=True)
METHODS.add("ezigen-ref-trained-t1", _EZ, "EZIGen with a trained reference UNet at t=1 (Tab. 7)",
            reference_trained=True)
METHODS.add("clip-projector", "methods.projector:ProjectorMethod",
            "CLIP ViT patch tokens + per-block projector + EZIGen adapter (Tab. 7)", encoder="clip")
METHODS.add("dino-projector", "methods.projector:ProjectorMethod",
            "DINO ViT patch tokens + per-block projector + EZIGen adapter (Tab. 7)", encoder="dino")
# external baselines through diffusers, each on its own base model
METHODS.add("ip-adapter-sd15", "methods.ip_adapter:IPAdapterMethod",
            "IP-Adapter (h94/IP-Adapter ip-adapter_sd15) on SD 1.5, image embedding -> 4 tokens", variant="sd15")
METHODS.add("ip-adapter-plus-sd15", "methods.ip_adapter:IPAdapterMethod",
            "IP-Adapter Plus (h94/IP-Adapter ip-adapter-plus_sd15) on SD 1.5, patch features -> 16 tokens",
            variant="plus")
METHODS.add("blip-diffusion", "methods.blip_diffusion:BlipDiffusionMethod",
            "BLIP-Diffusion (Salesforce/blipdiffusion, its own SD 1.5-derived model), zero-shot")

# ---- suites -------------------------------------------------------------------------------
SUITES.add("dreambench", "bench.suites.dreambench:DreamBench",
           "DreamBench: 30 subjects x 25 prompts, CLIP-T / CLIP-I / DINO")
SUITES.add("dreamedit", "bench.suites.dreamedit:DreamEdit",
           "DreamEditBench: subject replacement and addition, masked -sub/-back scores")
SUITES.add("fastcomposer", "bench.suites.fastcomposer:FastComposer",
           "FastComposer single-subject set: 15 CelebA identities x 40 prompts, face identity")

# ---- metrics ------------------------------------------------------------------------------
# A metric entry builds a bench.metrics.base.Metric; one entry may emit several metric ids
# (for example CLIP-T and CLIP-I share one backbone).
METRICS.add("clip", "bench.metrics.clip:ClipMetric",
            "CLIP-T (image-text) and CLIP-I (image-image) cosines, ViT-B/32 OpenAI by default")
METRICS.add("dino", "bench.metrics.dino:DinoMetric",
            "DINO ViT-S/16 CLS cosine with the subject's real images")
METRICS.add("dinov2", "bench.metrics.dino:Dinov2Metric",
            "DINOv2 CLS cosine (transformers), an extra beside the protocol's DINO")
METRICS.add("masked", "bench.metrics.grounded_sam:MaskedRegionMetric",
            "DreamEdit paper protocol: DINO/CLIP-I -sub and -back through Grounded-SAM masks")
METRICS.add("dreamedit-official", "bench.metrics.grounded_sam:OfficialDreamEditMetric",
            "DreamEdit official protocol: whole-image -sub/-back scores and their geometric mean")
METRICS.add("faceid", "bench.metrics.face:FaceNetIdentity",
            "face identity, MTCNN + FaceNet (VGGFace2) as in FastComposer")
METRICS.add("arcface", "bench.metrics.face:ArcFaceIdentity",
            "face identity, insightface ArcFace (onnxruntime), an extra")
METRICS.add("clip-t-l14", "bench.metrics.clip:ClipMetric",
            "prompt consistency with CLIP ViT-L/14 (FastComposer protocol)",
            backbone="open_clip:ViT-L-14/openai", image_metric=False)
