"""The EZIGen adapter: subject attention between self- and cross-attention of every block.

docs/protocols.md section 1, "Adapter". In every transformer block of the main UNet::

    a  = adapter_norm(h1)                     # h1: hidden state after the self-attention residual
    o  = Attn(q = a Wq, k = [a ; w_l f_l] Wk, v = [a ; w_l f_l] Wv) Wo
    h2 = h1 + o + a                           # the reference code's extra "+ a", kept

``adapter_norm`` starts as a copy of ``norm1`` and the attention as a copy of ``attn1``
(q, k, v, out; no zero init); ``w_l`` are learnable scalars, one per block, init 1.0.

Insertion point: diffusers' ``BasicTransformerBlock.forward`` calls ``self.fuser(h1, objs)``
right after the self-attention residual when the UNet is given
``cross_attention_kwargs={"gligen": {...}}`` (GLIGEN's slot), after passing that dict through
``unet.position_net``. We install a pass-through ``position_net`` and one
:class:`SubjectAttention` per block as its ``fuser``. Gating is therefore per UNet call:
without the kwarg (:func:`adapter_kwargs` returns ``{}`` when gated off) the block runs the
base model's code path untouched, bit for bit.

Blocks are indexed in forward order (down, mid, up) parsed from module names, never in
``named_modules()`` order, which lists the mid block after the up blocks.

Subject key/value cache (inference only). The key and value rows of the subject tokens,
``(w_l f_l) Wk`` and ``(w_l f_l) Wv``, do not depend on the UNet's input: for fixed-timestep
reference features they are the same at every denoising step. With
``EZIGenAdapter.cache_subject_kv`` on (the default) and gradients off, each block projects
them once per :class:`SubjectTokens` object and reuses them for every UNet call that gets the
same object (the sampler passes one object for all steps of a pass). The cache entry is
stamped with the version counters of the features, of ``w`` and of the projection weights, so
an in-place change of any of them recomputes it. The projection is the same row-wise linear
map as before, applied to the subject rows alone instead of to ``[a ; w f]``: equal up to the
order of float sums in the matrix product (docs/architecture.md).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_BLOCK_NAME = re.compile(r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.attentions\.(\d+)"
                         r"\.transformer_blocks\.(\d+)$")


def _forward_order_key(name: str) -> tuple[int, int, int, int]:
    m = _BLOCK_NAME.match(name)
    if m is None:
        raise ValueError(f"not a UNet transformer block name: {name}")
    stage = 0 if m.group(2) is not None else (1 if m.group(1) == "mid_block" else 2)
    index = int(m.group(2) or m.group(3) or 0)
    return stage, index, int(m.group(4)), int(m.group(5))


def transformer_block_names(unet: nn.Module) -> list[str]:
    """Names of the UNet's transformer blocks in forward order: down blocks, mid, up blocks.

    Within a down/up block, attention j runs after resnet j, so (stage, block, attention,
    transformer index) is the execution order (docs/protocols.md section 1, "Order").
    """
    names = [n for n, _ in unet.named_modules() if _BLOCK_NAME.match(n)]
    return sorted(names, key=_forward_order_key)


@dataclass
class SubjectTokens:
    """The subject features a UNet call attends to, one tensor per block in forward order.

    ``features[l]``: [B, S * L_l, C_l] (S subject slots concatenated along tokens);
    ``slot_mask``: [B, S] bool, False for an empty slot (masked out of the attention; the
    reference code builds this mask but never applies it), or None when every slot is full;
    ``weights``: the learnable per-block scalars w_l (the adapter's parameter, so gradients flow).
    """

    features: list[torch.Tensor]
    weights: torch.Tensor
    slot_mask: torch.Tensor | None = None
    _key_masks: dict = field(default_factory=dict, repr=False)
    _subject_kv: dict = field(default_factory=dict, repr=False)   # block index -> (stamp, k, v)

    @property
    def batch_size(self) -> int:
        return self.features[0].shape[0]

    def key_mask(self, index: int, n_main: int) -> torch.Tensor | None:
        """SDPA boolean mask [B, 1, 1, n_main + S*L] for block ``index`` (True = attend)."""
        if self.slot_mask is None:
            return None
        cache_key = (index, n_main)
        if cache_key not in self._key_masks:
            feats = self.features[index]
            slots = self.slot_mask.shape[1]
            per_slot = feats.shape[1] // slots
            subject = self.slot_mask.to(feats.device).repeat_interleave(per_slot, dim=1)
            main = torch.ones(feats.shape[0], n_main, dtype=torch.bool, device=feats.device)
            self._key_masks[cache_key] = torch.cat([main, subject], dim=1)[:, None, None, :]
        return self._key_masks[cache_key]

    def subject_kv(self, index: int, attention: "AdapterAttention") -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of block ``index``'s subject rows, ``(w f) Wk`` and ``(w f) Wv``,
        projected once and reused while features, ``w`` and the projection weights are unchanged
        (module docstring, "Subject key/value cache")."""
        feats, weight = self.features[index], self.weights[index]
        stamp = _stamp(feats, self.weights, *attention.kv_parameters())
        hit = self._subject_kv.get(index)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1], hit[2]
        k, v = attention.project_kv((weight * feats).to(attention.to_k.weight.dtype))
        if stamp is not None:
            self._subject_kv[index] = (stamp, k, v)
        return k, v

    def select(self, rows) -> "SubjectTokens":
        """The tokens of a subset of the batch (samples that are still being denoised)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return SubjectTokens([f[rows.to(f.device)] for f in self.features], self.weights,
                             None if self.slot_mask is None else self.slot_mask[rows])

    def for_guidance(self) -> "SubjectTokens":
        """Tokens for a classifier-free-guided call over [uncond; cond]: the subject features
        are used in both halves, so guidance acts on the text only (docs/protocols.md section 1)."""
        return SubjectTokens([torch.cat([f, f]) for f in self.features], self.weights,
                             None if self.slot_mask is None else torch.cat([self.slot_mask] * 2))

    @staticmethod
    def stack(per_sample: list[list[list[torch.Tensor]]], weights: torch.Tensor) -> "SubjectTokens":
        """Batch tokens from per-sample lists of subject images, each a per-block list of [L, C].

        Samples with fewer images than the most in the batch get zero-filled, masked slots.
        """
        slots = max(len(images) for images in per_sample)
        n_blocks = len(per_sample[0][0])
        features = []
        for layer in range(n_blocks):
            ref = per_sample[0][0][layer]
            rows = []
            for images in per_sample:
                toks = [img[layer] for img in images]
                toks += [torch.zeros_like(ref)] * (slots - len(toks))
                rows.append(torch.cat(toks, dim=0))
            features.append(torch.stack(rows))
        counts = torch.tensor([len(images) for images in per_sample])
        slot_mask = None
        if bool((counts < slots).any()):
            slot_mask = torch.arange(slots)[None, :] < counts[:, None]
        return SubjectTokens(features, weights, slot_mask)


def _stamp(*tensors: torch.Tensor) -> tuple | None:
    """Identity and in-place version of each tensor; None where a tensor has no version counter
    (inference-mode tensors), which disables caching."""
    try:
        return tuple((id(t), t._version) for t in tensors)
    except RuntimeError:
        return None


class AdapterAttention(nn.Module):
    """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0), so the
    official checkpoint keys ``...adapter.to_q.weight`` map one to one; runs on SDPA."""

    def __init__(self, attn1: nn.Module):
        super().__init__()
        self.heads = attn1.heads
        self.scale = attn1.scale
        self.to_q = copy.deepcopy(attn1.to_q)
        self.to_k = copy.deepcopy(attn1.to_k)
        self.to_v = copy.deepcopy(attn1.to_v)
        self.to_out = nn.ModuleList([copy.deepcopy(attn1.to_out[0]), nn.Dropout(0.0)])

    def kv_parameters(self) -> list[torch.Tensor]:
        """The tensors the subject keys/values depend on besides the tokens (the cache stamp)."""
        return [p for p in (self.to_k.weight, self.to_k.bias, self.to_v.weight, self.to_v.bias) if p is not None]

    def project_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_k(tokens), self.to_v(tokens)

    def forward(self, query_tokens: torch.Tensor, key_tokens: torch.Tensor,
                mask: torch.Tensor | None = None,
                extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attention of ``query_tokens`` over ``key_tokens``, followed (along the token axis) by
        the already projected keys/values ``extra_kv`` when given."""
        b, n_q, _ = query_tokens.shape

        def heads(x):
            return x.view(b, x.shape[1], self.heads, -1).transpose(1, 2)

        k, v = self.project_kv(key_tokens)
        if extra_kv is not None:
            k, v = torch.cat([k, extra_kv[0]], dim=1), torch.cat([v, extra_kv[1]], dim=1)
        q, k, v = heads(self.to_q(query_tokens)), heads(k), heads(v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n_q, -1).to(query_tokens.dtype)
        return self.to_out[1](self.to_out[0](out))


class SubjectAttention(nn.Module):
    """One block's adapter, installed as the block's ``fuser`` (see the module docstring)."""

    def __init__(self, block: nn.Module, index: int):
        super().__init__()
        self.index = index                           # position in forward order
        self.adapter_norm = copy.deepcopy(block.norm1)
        self.adapter = AdapterAttention(block.attn1)
        self.cache_subject_kv = True                 # set by EZIGenAdapter.cache_subject_kv

    def attend(self, normed: torch.Tensor, subject: torch.Tensor, weight: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """o = Attn(q = a, kv = [a ; w f]) for normed tokens a and subject tokens f."""
        keys = torch.cat([normed, (weight * subject).to(normed.dtype)], dim=1)
        return self.adapter(normed, keys, mask)

    def forward(self, hidden_states: torch.Tensor, tokens: SubjectTokens) -> torch.Tensor:
        normed = self.adapter_norm(hidden_states)
        mask = tokens.key_mask(self.index, hidden_states.shape[1])
        if self.cache_subject_kv and not torch.is_grad_enabled():
            out = self.adapter(normed, normed, mask, extra_kv=tokens.subject_kv(self.index, self.adapter))
        else:
            out = self.attend(normed, tokens.features[self.index], tokens.weights[self.index], mask)
        return hidden_states + out + normed          # h2 = h1 + o + a (docs/protocols.md section 1)


class _PassThrough(nn.Module):
    """``unet.position_net`` stand-in: hands the SubjectTokens to the fusers unchanged."""

    def forward(self, tokens: SubjectTokens) -> SubjectTokens:
        return tokens


class EZIGenAdapter(nn.Module):
    """All trainable EZIGen parameters: one :class:`SubjectAttention` per block and ``learnable_weights``.

    Built from a UNet (copies of each block's norm1/attn1: the untrained "init" adapter).
    :meth:`attach` installs the blocks into a UNet; the same UNet can then run gated off
    (base model) or on (``unet(..., cross_attention_kwargs=adapter_kwargs(tokens))``).
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.block_names = transformer_block_names(unet)
        if not self.block_names:
            raise ValueError("the UNet has no transformer blocks to attach the EZIGen adapter to")
        modules = dict(unet.named_modules())
        self.blocks = nn.ModuleList(SubjectAttention(modules[n], i) for i, n in enumerate(self.block_names))
        self.learnable_weights = nn.Parameter(torch.ones(len(self.block_names)))
        self.requires_grad_(True)    # copies of a frozen UNet's layers start frozen

    @property
    def cache_subject_kv(self) -> bool:
        """Whether inference reuses the subject keys/values across UNet calls (module docstring)."""
        return all(block.cache_subject_kv for block in self.blocks)

    @cache_subject_kv.setter
    def cache_subject_kv(self, on: bool) -> None:
        for block in self.blocks:
            block.cache_subject_kv = bool(on)

    def attach(self, unet: nn.Module) -> None:
        """Install each block's adapter as its ``fuser`` and a pass-through ``position_net``."""
        if transformer_block_names(unet) != self.block_names:
            raise ValueError("this adapter was built for a UNet with other transformer blocks")
        modules = dict(unet.named_modules())
        for name, block in zip(self.block_names, self.blocks):
            modules[name].fuser = block
        unet.position_net = _PassThrough()
        unet._ezigen_adapter_attached = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates (docs/protocols.md section 1, "Training"): q/k/v/out, adapter_norm, w_l."""
        return list(self.parameters())

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the official checkpoint's key names (docs/protocols.md section 1)."""
        state = {"learnable_weights": self.learnable_weights.detach()}
        for name, block in zip(self.block_names, self.blocks):
            for key, value in block.state_dict().items():
                state[f"{name}.{key}"] = value.detach()
        return state

    def tokens(self, per_sample_features: list[list[list[torch.Tensor]]]) -> SubjectTokens:
        return SubjectTokens.stack(per_sample_features, self.learnable_weights)


def attach_adapter(unet: nn.Module, adapter: EZIGenAdapter | None = None) -> EZIGenAdapter:
    """Build the untrained adapter from ``unet`` (unless given) and install it; returns it."""
    adapter = adapter if adapter is not None else EZIGenAdapter(unet)
    adapter.to(device=next(unet.parameters()).device, dtype=next(unet.parameters()).dtype)
    adapter.attach(unet)
    return adapter


def adapter_kwargs(tokens: SubjectTokens | None) -> dict:
    """UNet keyword arguments turning the adapter on (tokens given) or off (None: base UNet)."""
    if tokens is None:
        return {}
    return {"cross_attention_kwargs": {"gligen": {"tokens": tokens}}}
