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


# ---- method parameters --------------------------------------------------------------------
#: constructor arguments that the runner fills itself, never --param
_RUNNER_ARGUMENTS = ("self", "spec", "name")


def method_parameters(cls) -> dict[str, tuple[object, object]]:
    """A method's parameters: name -> (type annotation, default), read from its constructor.

    A constructor that forwards ``**kwargs`` to another method class names that class in the
    attribute ``forwards_params_to`` ("module:attr"); its parameters are included."""
    import inspect
    import typing

    init = cls.__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:            # an annotation that cannot be resolved: fall back to the raw ones
        hints = dict(getattr(init, "__annotations__", {}))
    out: dict[str, tuple[object, object]] = {}
    forwards = False
    for name, p in inspect.signature(init).parameters.items():
        if p.kind is p.VAR_KEYWORD:
            forwards = True
        elif p.kind is not p.VAR_POSITIONAL and name not in _RUNNER_ARGUMENTS:
            out[name] = (hints.get(name, object), p.default)
    target = getattr(cls, "forwards_params_to", None)
    if forwards and target:
        module, _, attr = target.partition(":")
        inner = getattr(importlib.import_module(module), attr)
        out = {**method_parameters(inner), **out}
    elif forwards:
        out["**"] = (object, None)   # takes any keyword: unknown names cannot be refused
    return out


def _coerce(value, annotation):
    """``value`` as ``annotation`` wants it, or raise ValueError naming what was expected."""
    import inspect
    import math
    import types
    import typing

    origin = typing.get_origin(annotation)
    if annotation in (object, typing.Any, inspect.Parameter.empty):
        return value
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        for choice in choices:
            if value == choice or str(value) == str(choice):
                return choice
        raise ValueError(f"one of {', '.join(repr(c) for c in choices)}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(errors))
    if annotation is type(None):
        if value is None:
            return None
        raise ValueError("none")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise ValueError("a boolean (true or false)")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63:
            return value
        raise ValueError("an integer (64-bit)")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)            # a huge integer would overflow inside torch
            except OverflowError:
                raise ValueError("a finite number") from None
            if math.isfinite(number):
                return number
        raise ValueError("a finite number")
    if annotation is str:
        if value is None or isinstance(value, bool):
            raise ValueError("a text")
        return str(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ValueError(f"a {annotation.__name__}")
    return value


def check_method_params(method: str, cls, params: Mapping[str, Any], option: str = "--param",
                        kind: str = "method", prefix: str = "") -> dict:
    """Validate parameters against the method class's constructor before anything loads:
    unknown names get a did-you-mean and the full list; values must fit the annotation
    (``typing.Literal`` choices included). Returns the values as the constructor wants them."""
    known = method_parameters(cls)
    open_ended = known.pop("**", None) is not None
    out = {}
    for key, value in params.items():
        if key not in known and open_ended:
            out[key] = value
            continue
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BenchError(f"{option} {prefix}{key}: {kind} {method!r} has no parameter {key!r}; {hint}"
                             f"its parameters: {', '.join(sorted(known)) or 'none'}")
        annotation, _default = known[key]
        try:
            out[key] = _coerce(value, annotation)
        except ValueError as exc:
            raise BenchError(f"{option} {prefix}{key}={value!r}: {kind} {method!r} expects {exc}") from None
        _check_text(out[key], _default, f"{option} {prefix}{key}", _template_params(cls).get(key))
        bounds = PARAM_BOUNDS.get(key)
        if bounds and isinstance(out[key], int) and not bounds[0] <= out[key] <= bounds[1]:
            raise BenchError(f"{option} {prefix}{key}={value!r}: must be between {bounds[0]} and {bounds[1]}")
    return out


#: Bounds of parameter names that mean the same in every method and metric (on top of types).
PARAM_BOUNDS = {"batch_size": (1, 4096)}


def _template_params(cls) -> dict:
    """The class's ``template_params``, with those of the class it forwards parameters to."""
    import importlib

    out = {}
    target = getattr(cls, "forwards_params_to", None)
    if target:
        module, _, attr = target.partition(":")
        out.update(getattr(getattr(importlib.import_module(module), attr), "template_params", {}))
    out.update(getattr(cls, "template_params", {}))
    return out


def _check_text(value, default, where: str, fields: frozenset[str] | None = None) -> None:
    """A text parameter is bounded (bench.limits.MAX_PROMPT_CHARS); a template parameter (named
    in the class's ``template_params`` with its fields, or one whose default is a template such
    as ``"a photo of a {}."``) may use only those fields, plainly."""
    from bench.limits import MAX_PROMPT_CHARS, check_template, template_fields

    if not isinstance(value, str):
        return
    if len(value) > MAX_PROMPT_CHARS:
        raise BenchError(f"{where}: {len(value)} characters, more than the limit of {MAX_PROMPT_CHARS} "
                         "(bench.limits.MAX_PROMPT_CHARS)")
    if fields is None and isinstance(default, str):
        try:
            fields = template_fields(default)
        except ValueError:
            return
    if fields:
        check_template(value, fields, where)


METHODS = Registry("method", entry_point_group="bench.methods")
SUITES = Registry("suite")
METRICS = Registry("metric")

# ---- methods ------------------------------------------------------------------------------
_EZ = "methods.ezigen:EZIGenMethod"
METHODS.add("sd", "methods.sd:StableDiffusionMethod",
            "plain Stable Diffusion with the class-noun prompt (text-only baseline)")
METHODS.add("copy-input", "methods.copy_input:CopyInputMethod",
            "copy-the-input baseline: the conditioning photo resized to the output size (identity scores' sanity row)")
METHODS.add("ezigen", _EZ, "EZIGen: decoupled layout/appearance, iterative transfer "
            "(protocol=release by default, as the public code; --param protocol=paper for the paper text)")
METHODS.add("ezigen-allstep", _EZ, "EZIGen ablation: adapter on for every step, one pass (Tab. 5 line 1)",
            schedule="allstep", iterative=False)
METHODS.add("ezigen-decoupled", _EZ, "EZIGen ablation: decoupled, one pass, no loops (Tab. 5 line 2)",
            iterative=False)
# Tab. 7 (reference-UNet timestep, trained reference, CLIP/DINO projectors) was measured with
# all-step transfer: its t=1 row equals Tab. 5's all-step row (docs/protocols.md section 1b).
_TAB7 = dict(schedule="allstep", iterative=False)
_TAB7_NOTE = "all-step transfer, one pass, no loops, as Tab. 7 was measured"
for _t in (1, 100, 300, 500, 800):
    METHODS.add(f"ezigen-ref-t{_t}", _EZ, f"EZIGen, reference UNet at t={_t} (Tab. 7; {_TAB7_NOTE})",
                reference_timestep=_t, **_TAB7)
METHODS.add("ezigen-ref-adaptive", _EZ,
            f"EZIGen, reference UNet re-encoded at the main UNet's timestep each step (Tab. 7; {_TAB7_NOTE})",
            reference_timestep="adaptive", **_TAB7)
METHODS.add("ezigen-ref-trained-adaptive", _EZ,
            f"EZIGen with a trained reference UNet, adaptive timestep (Tab. 7; {_TAB7_NOTE})",
            reference_timestep="adaptive", reference_trained=True, **_TAB7)
METHODS.add("ezigen-ref-trained-t1", _EZ,
            f"EZIGen with a trained reference UNet at t=1 (Tab. 7; {_TAB7_NOTE})",
            reference_trained=True, **_TAB7)
METHODS.add("clip-projector", "methods.projector:ProjectorMethod",
            f"CLIP ViT patch tokens + per-block projector + EZIGen adapter (Tab. 7; {_TAB7_NOTE})",
            encoder="clip", **_TAB7)
METHODS.add("dino-projector", "methods.projector:ProjectorMethod",
            f"DINO ViT patch tokens + per-block projector + EZIGen adapter (Tab. 7; {_TAB7_NOTE})",
            encoder="dino", **_TAB7)
# external baselines through diffusers, each on its own base model
METHODS.add("ip-adapter-sd15", "methods.ip_adapter:IPAdapterMethod",
            "IP-Adapter (h94/IP-Adapter ip-adapter_sd15) on SD 1.5, image embedding -> 4 tokens", variant="sd15")
METHODS.add("ip-adapter-plus-sd15", "methods.ip_adapter:IPAdapterMethod",
            "IP-Adapter Plus (h94/IP-Adapter ip-adapter-plus_sd15) on SD 1.5, patch features -> 16 tokens",
            variant="plus")
METHODS.add("blip-diffusion", "methods.blip_diffusion:BlipDiffusionMethod",
            "BLIP-Diffusion (Salesforce/blipdiffusion, its own SD 1.5-derived model), zero-shot")
# in-context baselines: one diffusers pipeline each (docs/methods-in-context.md)
METHODS.add("omnigen", "methods.in_context.omnigen:OmniGenMethod",
            "OmniGen v1 (Shitao/OmniGen-v1-diffusers), subject image(s) as <img><|image_k|></img> in the prompt")
METHODS.add("flux-kontext", "methods.in_context.flux_kontext:FluxKontextMethod",
            "FLUX.1 Kontext [dev] (black-forest-labs/FLUX.1-Kontext-dev), first subject image as its one condition")
METHODS.add("qwen-image-edit", "methods.in_context.qwen_image_edit:QwenImageEditMethod",
            "Qwen-Image-Edit-2509 (Qwen/Qwen-Image-Edit-2509), subject image(s) as its image list")
METHODS.add("qwen-image-edit-2511", "methods.in_context.qwen_image_edit:QwenImageEditMethod",
            "Qwen-Image-Edit-2511 (Qwen/Qwen-Image-Edit-2511): the 2509 pipeline class with the 2511 weights",
            weights_id="Qwen/Qwen-Image-Edit-2511")
METHODS.add("flux2", "methods.in_context.flux2:Flux2Method",
            "FLUX.2 [dev] (black-forest-labs/FLUX.2-dev), subject image(s) as its reference image list")

# ---- suites -------------------------------------------------------------------------------
SUITES.add("dreambench", "bench.suites.dreambench:DreamBench",
           "DreamBench: 30 subjects x 25 prompts, CLIP-T / CLIP-I / DINO")
SUITES.add("dreamedit", "bench.suites.dreamedit:DreamEdit",
           "DreamEditBench: subject replacement and addition, masked -sub/-back scores")
SUITES.add("fastcomposer", "bench.suites.fastcomposer:FastComposer",
           "FastComposer single-subject set: 15 CelebA identities x 40 prompts, face identity")
SUITES.add("dreambench-plus", "bench.suites.dreambench_plus:DreamBenchPlus",
           "DreamBench++: 150 images x 9 prompts, judged concept preservation (CP) and prompt following (PF)")
SUITES.add("omnicontext", "bench.suites.omnicontext:OmniContext",
           "OmniContext (OmniGen2): instructions with 1-3 reference images in 8 task types, judged PF and SC 0-10")

# ---- metrics ------------------------------------------------------------------------------
# A metric entry builds a bench.metrics.base.Metric; one entry may emit several metric ids
# (for example CLIP-T and CLIP-I share one backbone).
METRICS.add("clip", "bench.metrics.clip:ClipMetric",
            "CLIP-T (image-text) and CLIP-I (image-image) cosines, ViT-B/32 OpenAI by default")
METRICS.add("dino", "bench.metrics.dino:DinoMetric",
            "DINO ViT-S/16 CLS cosine with the subject's real images")
METRICS.add("dinov2", "bench.metrics.dino:Dinov2Metric",
            "DINOv2 CLS cosine (transformers), an extra beside the protocol's DINO")
METRICS.add("masked", "bench.metrics.dreamedit:MaskedRegionMetric",
            "DreamEdit paper protocol: DINO/CLIP-I -sub and -back through Grounded-SAM masks")
METRICS.add("dreamedit-official", "bench.metrics.dreamedit:OfficialDreamEditMetric",
            "DreamEdit official protocol: whole-image -sub/-back scores and their geometric mean")
METRICS.add("faceid", "bench.metrics.face:FaceNetIdentity",
            "face identity, MTCNN + FaceNet (VGGFace2) as in FastComposer")
METRICS.add("arcface", "bench.metrics.face:ArcFaceIdentity",
            "face identity, insightface ArcFace (onnxruntime), an extra")
METRICS.add("clip-t-l14", "bench.metrics.clip:ClipMetric",
            "prompt consistency with CLIP ViT-L/14 (FastComposer protocol)",
            backbone="open_clip:ViT-L-14/openai", image_metric=False)
METRICS.add("judge", "bench.metrics.judge:JudgeMetric",
            "DreamBench++ judge: a vision-language model rates concept preservation (CP) and prompt following (PF), 0-4")
METRICS.add("omnicontext-judge", "bench.metrics.omnicontext_judge:OmniContextJudge",
            "OmniContext judge: a vision-language model rates prompt following (PF) and subject consistency (SC), 0-10")
METRICS.add("copy", "bench.metrics.copy:CopyMetric",
            "copy detector: 1 when an output is much closer to its conditioning photo than real photos are to each other")
METRICS.add("dreamsim", "bench.metrics.dreamsim:DreamSimMetric",
            "DreamSim perceptual distance to the subject's reference image(s), lower is better (ensemble by default)")
