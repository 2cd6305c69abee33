"""Tiny random-weight Qwen-family models and a locally trained tokenizer, built offline.

Every model shares one byte-level BPE vocabulary trained here on the synthetic task's text, with
the Qwen special tokens, except ``qwen2-xtok`` which has its own vocabulary (for cross-tokenizer
distillation). Each model is saved with ``save_pretrained`` next to its processor/tokenizer, so the
Auto classes reload it from the directory like any Hugging Face checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>",
]

# A Qwen-style template without the default system prompt (keeps tiny prompts short). Visual
# parts become <|vision_start|><|image_pad|><|vision_end|>; the processor expands the pad token.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n__GEN_SUFFIX__{% endif %}"
)
# "think" renders an empty reasoning block after the generation prompt, as Qwen3 does with
# enable_thinking=False: a different template for strong-to-weak experiments.
CHAT_TEMPLATES = {
    "plain": _CHAT_TEMPLATE.replace("__GEN_SUFFIX__", ""),
    "think": _CHAT_TEMPLATE.replace("__GEN_SUFFIX__", "<think>\n\n</think>\n\n"),
}


def bpe_vocab(vocab_size: int = 1024, seed: int = 12345, special_tokens=tuple(SPECIAL_TOKENS)):
    """(vocabulary, merges) of a byte-level BPE trained on the synthetic corpus, ``special_tokens`` first.

    The corpus is small, so the trainer stops below ``vocab_size`` once no pair repeats (about
    430 tokens for the shared vocabulary); ``vocab_size=300`` gives a near-character-level one.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from .synthetic import text_corpus

    corpus = text_corpus(seed=seed)
    corpus += ["The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) , . ? !"] * 20
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    # the same pre-tokenisation as Qwen2Tokenizer, which rebuilds it on reload anyway
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return state["vocab"], merges


def train_tokenizer(vocab_size: int = 1024, seed: int = 12345):
    """A byte-level BPE trained on the synthetic corpus (``bpe_vocab``), wrapped as a transformers
    Qwen2Tokenizer with the Qwen special tokens."""
    from transformers import Qwen2Tokenizer

    vocab, merges = bpe_vocab(vocab_size, seed)
    hf_tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    hf_tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    hf_tok.eos_token = "<|im_end|>"
    hf_tok.pad_token = "<|endoftext|>"
    hf_tok.model_max_length = 4096
    return hf_tok


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_width: int
    vision_depth: int
    vision_heads: int


SIZES = {
    "student": Size(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vision_width=32, vision_depth=1, vision_heads=2),
    "teacher": Size(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, vision_width=64, vision_depth=2, vision_heads=4),
    # head_dim 64: vLLM's CPU attention backend rejects smaller heads
    "lm64": Size(hidden=128, layers=2, heads=2, kv_heads=1, intermediate=256, vision_width=32, vision_depth=1, vision_heads=2),
}

VL_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
TEXT_FAMILIES = ("qwen2", "qwen3")
FAMILIES = VL_FAMILIES + TEXT_FAMILIES


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half - 2 * (half * 3 // 8)
    return [t, half * 3 // 8, half * 3 // 8]


def build_model(family: str, size: Size, tok, seed: int = 0, vocab_size: int | None = None):
    """A random-init model of ``family`` with vocabulary ``tok`` (``vocab_size`` rows: default the tokenizer's
    length; real checkpoints pad it, Qwen's to 151,936)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    head_dim = size.hidden // size.heads
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(
        vocab_size=vocab_size or len(tok), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096, bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
    )
    if family == "qwen2":
        cfg = tf.Qwen2Config(**text, tie_word_embeddings=False)
        return tf.Qwen2ForCausalLM(cfg)
    if family == "qwen3":
        cfg = tf.Qwen3Config(**text, head_dim=head_dim, tie_word_embeddings=False)
        return tf.Qwen3ForCausalLM(cfg)
    mrope = {"rope_type": "default", "mrope_section": _mrope_section(head_dim), "rope_theta": 10000.0}
    if family == "qwen2_vl":
        vision = dict(depth=size.vision_depth, embed_dim=size.vision_width, hidden_size=size.hidden,
                      num_heads=size.vision_heads, mlp_ratio=2, patch_size=14)
        cfg = tf.Qwen2VLConfig(text_config={**text, "rope_parameters": mrope}, vision_config=vision, **ids)
        return tf.Qwen2VLForConditionalGeneration(cfg)
    if family == "qwen2_5_vl":
        vision = dict(depth=size.vision_depth, hidden_size=size.vision_width, out_hidden_size=size.hidden,
                      intermediate_size=size.vision_width * 2, num_heads=size.vision_heads, patch_size=14,
                      window_size=56, fullatt_block_indexes=[size.vision_depth - 1])
        cfg = tf.Qwen2_5_VLConfig(text_config={**text, "rope_parameters": mrope}, vision_config=vision, **ids)
        return tf.Qwen2_5_VLForConditionalGeneration(cfg)
    if family == "qwen3_vl":
        mrope3 = {**mrope, "mrope_interleaved": True}
        vision = dict(depth=size.vision_depth, hidden_size=size.vision_width, out_hidden_size=size.hidden,
                      intermediate_size=size.vision_width * 2, num_heads=size.vision_heads, patch_size=16,
                      num_position_embeddings=64, deepstack_visual_indexes=[0])
        cfg = tf.Qwen3VLConfig(text_config={**text, "head_dim": head_dim, "rope_parameters": mrope3},
                               vision_config=vision, **ids)
        return tf.Qwen3VLForConditionalGeneration(cfg)
    raise ValueError(f"unknown family {family!r}; known: {list(FAMILIES)}")


# Tiny pixel budgets (the real checkpoints' defaults are far larger): a 3x3-cell 84x84 image
# stays 84x84 (9 merged tokens for patch 14).
TINY_PIXELS = {"image_min": 28 * 28, "image_max": 224 * 224, "video_min": 28 * 28, "video_max": 112 * 112}


def build_processor(family: str, tok, chat_template: str):
    """The official transformers processor of ``family`` around ``tok``, with tiny pixel budgets."""
    import transformers as tf

    if family in TEXT_FAMILIES:
        tok.chat_template = chat_template
        return tok
    patch = 16 if family == "qwen3_vl" else 14
    img = tf.Qwen2VLImageProcessor(
        patch_size=patch, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": TINY_PIXELS["image_min"], "longest_edge": TINY_PIXELS["image_max"]},
    )
    vsize = {"shortest_edge": TINY_PIXELS["video_min"], "longest_edge": TINY_PIXELS["video_max"]}
    if family == "qwen3_vl":
        vid = tf.Qwen3VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=vsize)
        cls = tf.Qwen3VLProcessor
    else:
        vid = tf.Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=vsize)
        cls = tf.Qwen2VLProcessor if family == "qwen2_vl" else tf.Qwen2_5_VLProcessor
    return cls(image_processor=img, tokenizer=tok, video_processor=vid, chat_template=chat_template)


@dataclass(frozen=True)
class Preset:
    family: str
    size: str
    template: str = "plain"
    tokenizer: str = "shared"  # or "xtok": a different vocabulary


PRESETS = {
    **{f"{fam}-{sz}": Preset(fam, sz) for fam in FAMILIES for sz in ("student", "teacher")},
    "qwen2_vl-teacher-think": Preset("qwen2_vl", "teacher", template="think"),
    "qwen3-teacher-think": Preset("qwen3", "teacher", template="think"),
    # head_dim 64 for vLLM's CPU backend (make test-vllm)
    **{f"{fam}-lm64": Preset(fam, "lm64") for fam in ("qwen2",) + VL_FAMILIES},
    "qwen2-xtok": Preset("qwen2", "student", tokenizer="xtok"),
}
PRESET_GROUPS = {
    "all": list(PRESETS),
    "minimal": ["qwen2_vl-student", "qwen2_vl-teacher"],
}


def make_tiny_models(out: str | Path, names: list[str], seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Builds and saves each named preset under ``out/<name>``; returns name -> directory.

    A directory that already holds a finished model (its ``tiny_preset.json`` is written last)
    is kept as it is, so reruns are cheap.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; known: {sorted(PRESETS)} or groups {sorted(PRESET_GROUPS)}")
    toks = {}
    paths = {}
    for i, name in enumerate(tqdm(names, desc="tiny models", disable=not progress)):
        preset = PRESETS[name]
        path = out / name
        paths[name] = path
        marker = path / "tiny_preset.json"
        if marker.exists():
            continue
        if preset.tokenizer not in toks:
            toks[preset.tokenizer] = (
                train_tokenizer(1024, seed=12345) if preset.tokenizer == "shared"
                else train_tokenizer(300, seed=777)
            )
        import copy

        tok = copy.deepcopy(toks[preset.tokenizer])
        template = CHAT_TEMPLATES[preset.template]
        tok.chat_template = template
        model = build_model(preset.family, SIZES[preset.size], tok, seed=seed + i)
        model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.pad_token_id = tok.pad_token_id
        processor = build_processor(preset.family, tok, template)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        n_params = sum(p.numel() for p in model.parameters())
        marker.write_text(json.dumps({**preset.__dict__, "params": n_params, "vocab": len(tok)}, indent=1))
    return paths
