"""Tiny models: every family builds, saves, reloads through the Auto classes with identical logits."""

from __future__ import annotations

import json

import pytest
import torch

from uniopd_mm.tiny import PRESETS, SIZES, SPECIAL_TOKENS, _mrope_section, build_model


def _auto_model(path, family):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForCausalLM if family in ("qwen2", "qwen3") else AutoModelForImageTextToText
    return cls.from_pretrained(path)


@pytest.mark.parametrize("name", ["qwen2_vl-student", "qwen2_5_vl-teacher", "qwen3_vl-student", "qwen2-student",
                                  "qwen3-teacher", "qwen2-lm64", "qwen2-xtok"])
def test_reload_gives_identical_logits(tiny_dir, name):
    from transformers import AutoTokenizer

    preset = PRESETS[name]
    info = json.loads((tiny_dir / name / "tiny_preset.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_dir / name)
    seed = list(PRESETS).index(name)  # make_tiny_models seeds preset i with seed + i
    fresh = build_model(preset.family, SIZES[preset.size], tok, seed=seed).eval()
    loaded = _auto_model(tiny_dir / name, preset.family).eval()
    ids = tok("red: 3, blue: 2, so 5", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = fresh(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.equal(a, b)
    assert info["params"] == sum(p.numel() for p in loaded.parameters())


def test_tokenizer_has_qwen_special_tokens_and_template(tiny_dir):
    from transformers import AutoProcessor, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / "qwen2_vl-student")
    vocab = tok.get_vocab()
    for t in SPECIAL_TOKENS:
        assert t in vocab
        assert tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) == [t]
    proc = AutoProcessor.from_pretrained(tiny_dir / "qwen2_vl-student")
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    think = AutoTokenizer.from_pretrained(tiny_dir / "qwen3-teacher-think")
    assert think.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True).endswith("<think>\n\n</think>\n\n")


def test_cross_tokenizer_preset_has_another_vocabulary(tiny_dir):
    from transformers import AutoTokenizer

    shared = AutoTokenizer.from_pretrained(tiny_dir / "qwen2-student")
    other = AutoTokenizer.from_pretrained(tiny_dir / "qwen2-xtok")
    text = "red: 3, blue: 2, so 5"
    assert shared.get_vocab() != other.get_vocab()
    assert shared.tokenize(text) != other.tokenize(text)
    assert other.decode(other(text)["input_ids"]) == text


def test_head_dims(tiny_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_dir / "qwen2-lm64")
    assert cfg.hidden_size // cfg.num_attention_heads >= 64
    for name in ("qwen2_vl-student", "qwen2_5_vl-teacher", "qwen3_vl-teacher"):
        text = AutoConfig.from_pretrained(tiny_dir / name).text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2


def test_mrope_section_sums_to_half_head_dim():
    for hd in (16, 32, 64, 128):
        assert sum(_mrope_section(hd)) == hd // 2
