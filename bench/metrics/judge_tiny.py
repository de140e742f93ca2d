"""A tiny random Qwen2.5-VL judge, built in code and saved to a folder, for tests and the smoke preset.

It has the real architecture class (``Qwen2_5_VLForConditionalGeneration``, loaded back through
``AutoModelForImageTextToText`` and ``AutoProcessor`` exactly as a real judge id is) with one
layer, a narrow vision tower and a byte-level BPE tokenizer written here: the 256 byte symbols,
no merges, and the special tokens the Qwen2-VL family uses. Its chat template is this project's
own and produces the family's layout (``<|im_start|>role ... <|im_end|>``, an image as
``<|vision_start|><|image_pad|><|vision_end|>``). The image processor keeps images small
(``max_pixels``), so a 512x512 judge input becomes a few tokens.

Its answers are random text: they never hold a parseable ``Score: N``, so a smoke run shows every
judge answer as a counted failure (docs/judge.md).
"""

from __future__ import annotations

from pathlib import Path

from bench.files import cache_root
from bench.metrics.tiny import seeded

TINY_JUDGE_SEED = 0
TINY_JUDGE_VERSION = "1"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

# The family's turn layout, written for this project.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}")


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: Path) -> None:
    """A Qwen2 byte-level BPE tokenizer (the 256 byte symbols, no merges) saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=core, unk_token=None, bos_token=None,
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.model_max_length = 4096
    tokenizer.save_pretrained(folder)


def build_tiny_judge(folder: Path | str, seed: int = TINY_JUDGE_SEED) -> Path:
    """Write a tiny random Qwen2.5-VL model + processor to ``folder`` (loadable with from_pretrained)."""
    from transformers import (AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    folder = Path(folder)
    write_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14,
                                            merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_judge_folder() -> Path:
    """The tiny judge in the harness's cache (built once, reused; rebuilt when its version changes)."""
    folder = cache_root() / "tiny-judge" / f"qwen2.5-vl-v{TINY_JUDGE_VERSION}"
    if not (folder / "config.json").is_file() or not (folder / "processor_config.json").exists() and \
            not (folder / "preprocessor_config.json").exists():
        tmp = folder.with_name(folder.name + ".tmp")
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_judge(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder
