"""Tiny random-weight models that carry what real instruct checkpoints ship: the 151,936-row Qwen vocabulary
with the special tokens at their real ids, the published ``generation_config.json`` (sampling defaults that a
run must not inherit) and the chat template's shape (default system prompt, vision placeholders, the empty
think block of Qwen3 with thinking off). A real run's first hour meets these; the real-conditions tests
(``tests/real_conditions``) meet them on the CPU.

    python -m uniopd_mm.tiny_real --out artifacts/tiny_real     # every real-conditions preset

The regular part of the vocabulary is the tiny byte-level BPE (``tiny.bpe_vocab``) padded with unreachable
filler entries to Qwen's 151,643 regular tokens, so ``<|endoftext|>`` is 151643, ``<|im_end|>`` 151645,
``<|image_pad|>`` 151655 and ``<think>`` 151667, as in the real tokenizers; the embedding has 151,936 rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

QWEN_REGULAR = 151_643  # regular (BPE) tokens of the Qwen2 / 2.5 / 3 tokenizers
QWEN_VOCAB = 151_936  # rows of the embedding and the output head
# the added tokens in id order from 151643; (text, special)
QWEN_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
QWEN3_ADDED = [("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False)]

# generation_config.json as the checkpoints publish it (Hugging Face model pages, 2026): every sampling field here
# would change what generate draws if a run inherited it
GENERATION_CONFIGS = {
    "Qwen2-VL-7B-Instruct": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                             "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.01,
                             "top_p": 0.001, "top_k": 1},
    "Qwen2.5-VL-7B-Instruct": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                               "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1,
                               "top_p": 0.001, "top_k": 1},
    "Qwen3-VL-8B-Instruct": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                             "eos_token_id": [151645, 151643], "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.0,
                             "temperature": 0.7},
    "Qwen2.5-7B-Instruct": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                            "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.7,
                            "top_p": 0.8, "top_k": 20},
    "Qwen3-8B": {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                 "temperature": 0.6, "top_k": 20, "top_p": 0.95},
}

# the chat templates' behaviour as the model cards render it, tool-calling branches left out: Qwen2-VL and
# Qwen2.5-VL add "You are a helpful assistant." when there is no system turn (and number visuals with
# add_vision_id); Qwen2.5 adds its own system prompt; Qwen3-VL adds none; Qwen3 closes the generation prompt
# with an empty think block when enable_thinking is false
_PARTS = ("{% for content in message['content'] %}"
          "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
          "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
          "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
          "{% elif content['type'] == 'video' or 'video' in content %}"
          "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
          "{% endif %}<|vision_start|><|video_pad|><|vision_end|>"
          "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}")


def _template(default_system: str | None, think_off: bool = False) -> str:
    system = ("{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + default_system +
              "<|im_end|>\n{% endif %}") if default_system else ""
    gen = "<|im_start|>assistant\n"
    if think_off:
        gen += "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    return ("{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
            "{% for message in messages %}" + system + "<|im_start|>{{ message['role'] }}\n"
            "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
            "{% else %}" + _PARTS + "<|im_end|>\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}" + gen + "{% endif %}")


@dataclass(frozen=True)
class RealPreset:
    family: str  # tiny.build_model's family
    checkpoint: str  # whose generation_config.json and template it carries
    template: str
    qwen3_tokens: bool = False


REAL_PRESETS = {
    "qwen2_vl-real": RealPreset("qwen2_vl", "Qwen2-VL-7B-Instruct", _template("You are a helpful assistant.")),
    "qwen2_5_vl-real": RealPreset("qwen2_5_vl", "Qwen2.5-VL-7B-Instruct", _template("You are a helpful assistant.")),
    "qwen3_vl-real": RealPreset("qwen3_vl", "Qwen3-VL-8B-Instruct", _template(None), qwen3_tokens=True),
    "qwen2_5-real": RealPreset("qwen2", "Qwen2.5-7B-Instruct",
                               _template("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")),
    "qwen3-real": RealPreset("qwen3", "Qwen3-8B", _template(None, think_off=True), qwen3_tokens=True),
}


def real_vocab_tokenizer(qwen3_tokens: bool = False):
    """The tiny BPE padded to Qwen's 151,643 regular tokens, then Qwen's added tokens at their real ids."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from .tiny import bpe_vocab

    vocab, merges = bpe_vocab(special_tokens=())
    for i in range(len(vocab), QWEN_REGULAR):  # unreachable entries: no merge produces them
        vocab[f"\u2581filler{i}"] = i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None, pad_token=None)
    for text, special in QWEN_ADDED + (QWEN3_ADDED if qwen3_tokens else []):
        token = AddedToken(text, special=special, normalized=False)
        if special:
            tok.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
        else:
            tok.add_tokens([token])
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.model_max_length = 32768
    return tok


def make_real_models(out: str | Path, names: list[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Builds each named real-conditions preset (default: all) under ``out/<name>``; kept when already built."""
    import copy

    from .tiny import SIZES, build_model, build_processor

    out = Path(out)
    paths, toks = {}, {}
    for i, name in enumerate(names or list(REAL_PRESETS)):
        preset = REAL_PRESETS[name]
        path = paths[name] = out / name
        marker = path / "tiny_preset.json"
        if marker.exists():
            continue
        if preset.qwen3_tokens not in toks:
            toks[preset.qwen3_tokens] = real_vocab_tokenizer(preset.qwen3_tokens)
        tok = copy.deepcopy(toks[preset.qwen3_tokens])
        model = build_model(preset.family, SIZES["student"], tok, seed=seed + i, vocab_size=QWEN_VOCAB)
        processor = build_processor(preset.family, tok, preset.template)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        # the published generation config, written over the one save_pretrained made
        (path / "generation_config.json").write_text(json.dumps(GENERATION_CONFIGS[preset.checkpoint], indent=2))
        marker.write_text(json.dumps({"family": preset.family, "checkpoint": preset.checkpoint,
                                      "vocab": QWEN_VOCAB, "tokenizer": len(tok)}, indent=1))
    return paths


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("artifacts/tiny_real"))
    ap.add_argument("names", nargs="*", help=f"presets (default all): {', '.join(REAL_PRESETS)}")
    args = ap.parse_args()
    for n, p in make_real_models(args.out, args.names or None).items():
        print(f"{n}: {p}")
