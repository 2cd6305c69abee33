"""The one interface every model family implements: a sample in, model inputs out.

``encode_prompt(sample)`` renders the sample's chat with the model's own template and processor
and returns :class:`PromptInputs` (prompt token ids, the per-sample visual tensors, and the raw
images / frames a vLLM engine takes as ``multi_modal_data``). ``rollout_batch`` pads prompts on the
left for ``generate``; ``training_batch`` appends the response ids (prompts padded on the left,
responses on the right) and adds the response mask. The visual tensors of a batch are the per-sample tensors concatenated in order,
which is what the model's processor returns for the same batch.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from uniopd_mm.data import MissingTextView, PromptTooLong, Sample

View = Literal["pixels", "text"]

# per-sample visual tensors concatenated along dim 0 when batching
CONCAT_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


@dataclass
class PromptInputs:
    sample_id: str
    prompt_ids: list[int]
    text: str
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # visual tensors of this sample
    token_type_ids: list[int] | None = None  # mm_token_type_ids of the prompt (VL models)
    multi_modal_data: dict[str, list[Any]] = field(default_factory=dict)


def text_view_messages(sample: Sample) -> list[dict]:
    """The sample's messages with every image/video part replaced by its ``text_view``.

    The text view describes all of the record's visuals, so it takes the place of the first
    visual part and the others are dropped. Raises MissingTextView when the record has none.
    """
    has_visual = any(p["type"] in ("image", "video") for m in sample.messages for p in m["content"])
    if not has_visual:
        return sample.messages
    if not sample.text_view:
        raise sample.error(MissingTextView, "this model reads the text view, but the record has no 'text_view'")
    out, placed = [], False
    for m in sample.messages:
        parts = []
        for p in m["content"]:
            if p["type"] in ("image", "video"):
                if not placed:
                    parts.append({"type": "text", "text": sample.text_view + "\n"})
                    placed = True
            else:
                parts.append(p)
        out.append({"role": m["role"], "content": parts})
    return out


class ModalityProcessor:
    """Base class: subclasses implement :meth:`encode_prompt`."""

    family: str = ""
    is_multimodal: bool = False
    # keep each prompt's sized images / frames (``PromptInputs.multi_modal_data``): a vLLM engine needs them, an
    # HF model reads the pixel tensors alone, and a cache of encoded prompts would hold both (the trainer turns
    # it off where no vLLM engine reads the prompts)
    keep_media: bool = True

    def __init__(self, path: str, view: View = "pixels", options=None, chat_template_kwargs: dict | None = None):
        self.path, self.view = str(path), view
        self.options = options
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.max_prompt_tokens = getattr(options, "max_prompt_tokens", None)
        self.truncated: set[str] = set()  # keys of the samples whose prompt was truncated
        self._load()

    def _load(self) -> None:
        raise NotImplementedError

    # -- what subclasses provide -------------------------------------------------------------
    def encode_prompt(self, sample: Sample) -> PromptInputs:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token that ends a response: the chat template's end of turn, the tokenizer's EOS, ``<|im_end|>``
        and the checkpoint's ``generation_config.json`` EOS ids (Qwen instruct: ``<|im_end|>`` and
        ``<|endoftext|>``)."""
        ids = {self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id, self.end_of_turn_id,
               *self.generation_eos_ids}
        unk = self.tokenizer.unk_token_id
        return sorted(i for i in ids if i is not None and i != unk)

    @functools.cached_property
    def generation_eos_ids(self) -> list[int]:
        """``eos_token_id`` of the checkpoint's ``generation_config.json`` (a local folder's; [] without one)."""
        path = Path(self.path) / "generation_config.json"
        if not path.is_file():
            return []
        eos = json.loads(path.read_text()).get("eos_token_id")
        return [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]

    @functools.cached_property
    def end_of_turn_id(self) -> int | None:
        """The token this model's chat template closes an assistant turn with (``<|im_end|>`` for Qwen and SmolLM2,
        ``<|eot_id|>`` for Llama 3, ``<end_of_turn>`` for Gemma): the first special token after an assistant
        message's text, else the tokenizer's EOS."""
        marker = "UNIOPD_TURN_MARKER"
        tok = self.tokenizer
        render = getattr(getattr(self, "processor", None), "apply_chat_template", None) or tok.apply_chat_template
        text = None
        for content in ([{"type": "text", "text": "hi"}], "hi"):
            answer = [{"type": "text", "text": marker}] if isinstance(content, list) else marker
            try:
                text = render([{"role": "user", "content": content}, {"role": "assistant", "content": answer}],
                              tokenize=False, **self.chat_template_kwargs)
                break
            except Exception:  # noqa: BLE001 - a template that takes only string (or only list) content
                continue
        if text and marker in text:
            special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
            for i in tok(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]:
                if i in special:
                    return int(i)
        return tok.eos_token_id

    @property
    def suppressed_token_ids(self) -> list[int]:
        """Vision placeholder ids: never sampled, and masked alike in every log-prob (see README)."""
        unk = self.tokenizer.unk_token_id
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab[t] for t in VISION_PLACEHOLDERS if t in vocab and vocab[t] != unk)

    def messages_for(self, sample: Sample) -> list[dict]:
        return text_view_messages(sample) if (self.view == "text" or not self.is_multimodal) else sample.messages

    def fit_length(self, sample: Sample, ids: list[int], text: str, visual: bool) -> tuple[list[int], str]:
        """The prompt as it fits ``max_prompt_tokens``: unchanged when it fits, else its last
        ``max_prompt_tokens`` tokens (and their text) under ``overlong_prompt: truncate``; otherwise
        raises PromptTooLong. A visual prompt is never cut (its placeholder tokens must match its
        pixel features)."""
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids, text
        reason = f"prompt has {len(ids)} tokens > max_prompt_tokens={limit}"
        if getattr(self.options, "overlong_prompt", "skip") != "truncate":
            raise sample.error(PromptTooLong, reason)
        if visual:
            raise sample.error(PromptTooLong, reason + " (a prompt with images or video is not truncated)")
        self.truncated.add(sample.key)
        return ids[-limit:], self.tokenizer.decode(ids[-limit:], skip_special_tokens=False)

    def renders_like(self, other: "ModalityProcessor") -> bool:
        """Whether ``other`` encodes every sample as this processor does, so the two may share encoded prompts:
        the same family, view, options and chat-template arguments, the same Hugging Face processor settings
        (image and video processors), chat template and tokenizer (for a fast tokenizer its whole definition:
        vocabulary, merges, normaliser, added tokens)."""
        if type(other) is not type(self) or (self.view, self.options, self.chat_template_kwargs) != \
                (other.view, other.options, other.chat_template_kwargs):
            return False
        mine, theirs = getattr(self, "processor", None), getattr(other, "processor", None)
        if (mine is None) != (theirs is None) or (mine is not None and mine.to_dict() != theirs.to_dict()):
            return False
        a, b = self.tokenizer, other.tokenizer
        if getattr(mine, "chat_template", None) != getattr(theirs, "chat_template", None) or \
                a.chat_template != b.chat_template or a.special_tokens_map != b.special_tokens_map:
            return False
        if hasattr(a, "backend_tokenizer") and hasattr(b, "backend_tokenizer"):
            return a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
        return type(a) is type(b) and a.get_vocab() == b.get_vocab()

    def prompt_cache(self, limit: int, max_bytes: int | None = None):
        """A cache of this processor's encoded prompts (``data.PromptCache``), bounded in entries and bytes."""
        from uniopd_mm.data import PromptCache

        return PromptCache(limit, self.encode_prompt, max_bytes, prompt_nbytes)

    def save_pretrained(self, directory) -> None:
        """Writes the tokenizer / processor files next to an exported model."""
        (getattr(self, "processor", None) or self.tokenizer).save_pretrained(directory)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def rollout_batch(self, prompts: list[PromptInputs]) -> dict[str, torch.Tensor]:
        """Left-padded prompts for ``model.generate``."""
        return collate(prompts, None, self.pad_token_id, padding_side="left")

    def training_batch(self, prompts: list[PromptInputs], responses: list[list[int]]) -> dict[str, torch.Tensor]:
        """Prompt (left-padded) + response (right-padded), with ``responses`` and ``response_mask`` [B, T]."""
        return collate(prompts, responses, self.pad_token_id)


def prompt_nbytes(prompt: PromptInputs) -> int:
    """The memory an encoded prompt holds: its token ids, visual tensors and raw media (PIL images, frames)."""
    total = 8 * len(prompt.prompt_ids) + sum(t.numel() * t.element_size() for t in prompt.features.values())
    for items in prompt.multi_modal_data.values():
        for item in items:
            frames = item[0] if isinstance(item, tuple) else item
            if hasattr(frames, "nbytes"):  # numpy frames
                total += int(frames.nbytes)
            elif hasattr(frames, "size") and hasattr(frames, "getbands"):  # a PIL image
                total += frames.size[0] * frames.size[1] * len(frames.getbands())
    return total


def collate(prompts: list[PromptInputs], responses: list[list[int]] | None, pad_id: int,
            padding_side: Literal["left", "right"] = "left") -> dict[str, torch.Tensor]:
    """Pads token sequences and concatenates the visual tensors of a batch, in sample order.

    Without responses: prompts padded on ``padding_side`` (left for generate).
    With responses (training layout): prompts padded on the left to width P, responses on the right
    to width T, so every response starts at column P. Then the logits at columns P-1 .. P+T-2
    predict the response tokens and ``logits_to_keep=T+1`` computes only those (plus one).
    Adds ``responses`` [B, T] (pad-filled) and ``response_mask`` [B, T] (1 on response tokens).
    """
    n = len(prompts)
    if responses is not None and len(responses) != n:
        raise ValueError(f"{n} prompts but {len(responses)} responses")
    ptypes = [list(p.token_type_ids) if p.token_type_ids is not None else [0] * len(p.prompt_ids) for p in prompts]
    width_p = max(len(p.prompt_ids) for p in prompts)
    left = padding_side == "left" or responses is not None

    def pad_rows(rows, width, value, on_left):
        # one tensor for all rows, placed by a mask of the filled cells (row-major, as the rows are concatenated):
        # a tensor per row cost more than the forward of a tiny model
        out = torch.full((n, width), value, dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows])
        cols = torch.arange(width)
        filled = cols[None, :] >= (width - lengths)[:, None] if on_left else cols[None, :] < lengths[:, None]
        out[filled] = torch.tensor([x for r in rows for x in r], dtype=torch.long)
        return out

    ids = pad_rows([p.prompt_ids for p in prompts], width_p, pad_id, left)
    attn = pad_rows([[1] * len(p.prompt_ids) for p in prompts], width_p, 0, left)
    types = pad_rows(ptypes, width_p, 0, left)
    batch = {}
    if responses is not None:
        width_r = max(1, max(len(r) for r in responses))
        resp = pad_rows([list(r) for r in responses], width_r, pad_id, False)
        rmask = pad_rows([[1] * len(r) for r in responses], width_r, 0, False)
        ids, attn = torch.cat([ids, resp], 1), torch.cat([attn, rmask], 1)
        types = torch.cat([types, torch.zeros_like(resp)], 1)
        batch["responses"], batch["response_mask"] = resp, rmask
    batch["input_ids"], batch["attention_mask"] = ids, attn
    if any(p.token_type_ids is not None for p in prompts):
        batch["mm_token_type_ids"] = types
    for key in CONCAT_KEYS:
        parts = [p.features[key] for p in prompts if key in p.features]
        if parts:
            batch[key] = torch.cat(parts, dim=0)
    if responses is not None and any(p.features for p in prompts):
        # training layout, for models.forward_sharing_prompts: each row's share of the concatenated visual
        # tensors, and which rows hold the same prompt object (equal tokens may be other images)
        batch["row_sizes"] = {key: torch.tensor([len(p.features[key]) if key in p.features else 0 for p in prompts])
                              for key in CONCAT_KEYS if key in batch}
        first_row: dict[int, int] = {}
        batch["prompt_group"] = torch.tensor([first_row.setdefault(id(p), i) for i, p in enumerate(prompts)])
    return batch


MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids") + CONCAT_KEYS


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that the model's forward takes."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUT_KEYS}
