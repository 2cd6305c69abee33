"""Modality-aware processors: one sample schema in, inputs for any supported model out.

``make_processor(family, path, view=..., options=...)`` picks the family's module from a literal
table and imports it lazily. The family comes from configuration, never from class names.
"""

from __future__ import annotations

import importlib

from .base import ModalityProcessor, PromptInputs, collate, model_inputs, prompt_nbytes, text_view_messages

FAMILIES = {
    "qwen2_vl": "processors.qwen2_vl",
    "qwen2_5_vl": "processors.qwen2_5_vl",
    "qwen3_vl": "processors.qwen3_vl",
    "text": "processors.text",
}


def make_processor(family: str, path: str, view: str = "pixels", options=None,
                   chat_template_kwargs: dict | None = None) -> ModalityProcessor:
    if family not in FAMILIES:
        raise ValueError(f"unknown processor family {family!r}; known: {sorted(FAMILIES)}")
    module = importlib.import_module(FAMILIES[family])
    return module.Processor(path, view=view, options=options, chat_template_kwargs=chat_template_kwargs)


__all__ = ["FAMILIES", "ModalityProcessor", "PromptInputs", "collate", "make_processor", "model_inputs", "prompt_nbytes",
           "text_view_messages"]
