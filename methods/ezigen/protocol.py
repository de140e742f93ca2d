"""The two EZIGen protocols: ``release`` (the public reference code) and ``paper`` (the paper text).

docs/protocols.md sections 1 and 1b. Each difference is its own method parameter; the protocol
only chooses the defaults, so ``--param`` can override any one of them. A parameter left at
``None`` takes the protocol's value.

| parameter           | release                                      | paper                                  |
|---------------------|----------------------------------------------|----------------------------------------|
| negative_prompt     | ``dark, blur, defoucus, lack of content, dizzy.`` (typo) | ``... defocus ...``        |
| max_loops           | 9 (loop condition gives 3..9)                | 10                                     |
| renoise             | ``split``: noise at t = split_ratio x 1000 (400), resume at t=381 | ``resume``: both at t=381 |
| vae_latent          | ``sample`` (posterior sample)                | ``mean``                               |
| subject_resize      | ``bilinear``                                 | ``bicubic``                            |
| edit_denoiser       | ``ddpm`` (stochastic)                        | ``dpmsolver`` (DPM-Solver++)           |
| inversion_text      | ``exceptional`` (77 x id 7788, no positions) | ``empty`` (the empty prompt)           |
| inversion_grid      | ``linspace`` (0, 20, ..., 380 -> 400)        | ``leading`` (the denoising grid)       |
| edit_blend          | ``release``: step i blends with the latent after 20 - i inversion steps | ``aligned``: the level the step landed on |
| edit_mask           | ``bilinear`` (soft edges)                    | ``nearest``                            |
| edit_aspect         | ``source`` (short side = resolution)         | ``square``                             |
| split_steps         | ``truncate``: adapter on at floor((1-r) x steps), loops resume at int(steps - r x steps) | ``round`` |
| similarity_input    | ``pil``: OpenAI clip preprocessing of 8-bit PIL images | ``tensor`` (float tensors)   |
| reference_prompt    | ``a {class_noun}`` (the release's command-line subject prompt, e.g. ``a dog``) | ``a photo of a {class_noun}.`` (training text) |
"""

from __future__ import annotations

from typing import Literal

Protocol = Literal["release", "paper"]

#: the first pass's negative prompt as the reference code writes it (typo included: it
#: tokenises differently from "defocus")
RELEASE_NEGATIVE_PROMPT = "dark, blur, defoucus, lack of content, dizzy."
PAPER_NEGATIVE_PROMPT = "dark, blur, defocus, lack of content, dizzy."

#: reference-pass text (``{class_noun}`` is filled in): the release passes the subject prompt given
#: on its command line (``--subject_prompt "a dog"`` in infer_generation.sh); training used
#: ``a photo of a {class}.``
RELEASE_REFERENCE_PROMPT = "a {class_noun}"
PAPER_REFERENCE_PROMPT = "a photo of a {class_noun}."

#: the TF-ICON "exceptional prompt" used by the release's inversion: every input id replaced by this
EXCEPTIONAL_TOKEN_ID = 7788

SETTINGS: dict[str, dict[str, object]] = {
    "release": dict(negative_prompt=RELEASE_NEGATIVE_PROMPT, max_loops=9, renoise="split", vae_latent="sample",
                    subject_resize="bilinear", edit_denoiser="ddpm", inversion_text="exceptional",
                    inversion_grid="linspace", edit_blend="release", edit_mask="bilinear", edit_aspect="source",
                    split_steps="truncate", similarity_input="pil", reference_prompt=RELEASE_REFERENCE_PROMPT),
    "paper": dict(negative_prompt=PAPER_NEGATIVE_PROMPT, max_loops=10, renoise="resume", vae_latent="mean",
                  subject_resize="bicubic", edit_denoiser="dpmsolver", inversion_text="empty",
                  inversion_grid="leading", edit_blend="aligned", edit_mask="nearest", edit_aspect="square",
                  split_steps="round", similarity_input="tensor", reference_prompt=PAPER_REFERENCE_PROMPT),
}

#: allowed values of each protocol-set choice parameter (for error messages)
CHOICES: dict[str, tuple[str, ...]] = {
    "renoise": ("split", "resume"), "vae_latent": ("sample", "mean"), "subject_resize": ("bilinear", "bicubic"),
    "edit_denoiser": ("ddpm", "dpmsolver"), "inversion_text": ("exceptional", "empty"),
    "inversion_grid": ("linspace", "leading"), "edit_blend": ("release", "aligned"),
    "edit_mask": ("bilinear", "nearest"), "edit_aspect": ("source", "square"),
    "split_steps": ("truncate", "round"), "similarity_input": ("pil", "tensor"),
}


def resolve(protocol: str, **overrides) -> dict[str, object]:
    """The protocol's settings with every non-None override applied (choices checked)."""
    if protocol not in SETTINGS:
        raise ValueError(f"protocol must be 'release' or 'paper', not {protocol!r}")
    settings = dict(SETTINGS[protocol])
    for name, value in overrides.items():
        if name not in settings:
            raise ValueError(f"{name!r} is not a protocol-set parameter")
        if value is None:
            continue
        if name in CHOICES and value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, not {value!r}")
        settings[name] = value
    return settings


def exceptional_prompt_embeddings(text_encoder, batch: int, length: int = 77):
    """The release's inversion text: all ``length`` ids = 7788, position embeddings not added,
    the rest of the CLIP text model as usual (causal mask, final layer norm)."""
    import torch

    embeddings = getattr(text_encoder, "embeddings", None) or text_encoder.text_model.embeddings
    device = next(text_encoder.parameters()).device
    ids = torch.full((batch, length), EXCEPTIONAL_TOKEN_ID, dtype=torch.long, device=device)
    handle = embeddings.position_embedding.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            return text_encoder(ids)[0]
    finally:
        handle.remove()
