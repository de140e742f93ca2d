"""EZIGen: zero-shot subject-driven generation and editing (docs/protocols.md section 1).

Modules: :mod:`.adapter` (the per-block subject attention and its gate), :mod:`.reference`
(the reference-UNet subject encoder), :mod:`.sampler` (decoupled + iterative generation),
:mod:`.editing` (DreamEdit-style editing), :mod:`.checkpoint` (safetensors / official
accelerate checkpoints), :mod:`.similarity` (CLIP stop rule), :mod:`.method` (the harness
adapter, ``EZIGenMethod``).

API for training code (methods/training)::

    from methods.ezigen import (EZIGenAdapter, attach_adapter, adapter_kwargs, ReferenceEncoder,
                                capture_norm1, transformer_block_names, save_checkpoint,
                                read_checkpoint, load_adapter_state)

    adapter = attach_adapter(unet)                  # init from norm1/attn1, w_l = 1, installed as fusers
    params = adapter.trainable_parameters()         # q/k/v/out, adapter_norm, learnable_weights
    names = adapter.block_names                     # transformer blocks in forward order
    with capture_norm1(reference_unet, names) as captured:   # subject features: norm1 outputs
        reference_unet(noisy_subject, t, encoder_hidden_states=subject_text)
    per_sample = [[[captured[n][0][i] for n in names]] for i in range(batch)]  # sample/slot/block
    tokens = adapter.tokens(per_sample)             # SubjectTokens; empty slots are masked
    # subject dropout: zero a sample's features (tokens.features[l][i] = 0)
    pred = unet(noisy, t, encoder_hidden_states=text, **adapter_kwargs(tokens)).sample
    save_checkpoint(adapter, out_dir, reference_unet=None)      # adapter.safetensors (official keys)
    ckpt = read_checkpoint(path, set(unet.state_dict()))        # ours or an accelerate folder
    load_adapter_state(adapter, ckpt.adapter_state, path)       # strict: raises CheckpointError

``adapter_kwargs(None)`` is ``{}``: the UNet runs as the base model, bit for bit.
"""

from methods.ezigen.adapter import (EZIGenAdapter, SubjectAttention, SubjectTokens, adapter_kwargs,
                                    attach_adapter, transformer_block_names)
from methods.ezigen.checkpoint import (CheckpointError, load_adapter_state, load_reference_state,
                                       read_checkpoint, save_checkpoint)
from methods.ezigen.method import EZIGenMethod
from methods.ezigen.reference import ReferenceEncoder, capture_norm1

__all__ = ["EZIGenMethod", "EZIGenAdapter", "SubjectAttention", "SubjectTokens", "adapter_kwargs",
           "attach_adapter", "transformer_block_names", "CheckpointError", "load_adapter_state",
           "load_reference_state", "read_checkpoint", "save_checkpoint", "ReferenceEncoder", "capture_norm1"]
