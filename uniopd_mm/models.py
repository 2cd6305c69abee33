"""Loading models and processors from a :class:`ModelConfig` (any Hugging Face checkpoint path)."""

from __future__ import annotations

from .config import ModelConfig

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_model(cfg: ModelConfig, device: str = "cpu"):
    """The model class comes from the configured family, never from sniffing the checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForCausalLM if cfg.family == "text" else AutoModelForImageTextToText
    model = cls.from_pretrained(cfg.path, dtype=getattr(torch, DTYPES[cfg.dtype]))
    return model.to(device)


def load_processor(cfg: ModelConfig):
    from processors import make_processor

    return make_processor(cfg.family, cfg.path, view=cfg.view, options=cfg.processor,
                          chat_template_kwargs=cfg.chat_template_kwargs)
