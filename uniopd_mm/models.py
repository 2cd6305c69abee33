"""Loading models and processors from a :class:`ModelConfig` (any Hugging Face checkpoint path)."""

from __future__ import annotations

import contextlib

import torch

from .config import ModelConfig

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@contextlib.contextmanager
def whole_weights():
    """Loads inside this block are never ZeRO-3-partitioned (frozen teachers, reference models).

    NOTE: while the DeepSpeed engine holds an HfDeepSpeedConfig with stage 3, transformers'
    from_pretrained partitions every model it loads; a frozen model must stay whole.
    """
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    obj = ref() if ref is not None else None
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if obj is not None:
            hf_ds.set_hf_deepspeed_config(obj)


def load_model(cfg: ModelConfig, device: str = "cpu", frozen: bool = False):
    """The model class comes from the configured family, never from sniffing the checkpoint.

    ``frozen=True``: eval mode, no gradients, whole weights even under ZeRO-3.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls = AutoModelForCausalLM if cfg.family == "text" else AutoModelForImageTextToText
    with whole_weights() if frozen else contextlib.nullcontext():
        model = cls.from_pretrained(cfg.path, dtype=getattr(torch, DTYPES[cfg.dtype]))
    if frozen:
        model.requires_grad_(False).eval()
    return model.to(device)


def load_processor(cfg: ModelConfig):
    from processors import make_processor

    return make_processor(cfg.family, cfg.path, view=cfg.view, options=cfg.processor,
                          chat_template_kwargs=cfg.chat_template_kwargs)


def load_frozen(path, family: str, processor_options: dict | None = None):
    """(frozen model, processor) of a checkpoint outside any experiment config (eval, demo, scripts)."""
    from .config import ModelConfig
    from .config_base import from_dict

    cfg = from_dict(ModelConfig, {"path": str(path), "family": family, "processor": processor_options or {}},
                    prefix="model")
    return load_model(cfg, frozen=True), load_processor(cfg)


def response_logits(model, batch: dict):
    """[B, T, V] logits predicting the response tokens of a training-layout batch.

    Prompts are padded on the left and responses on the right (``processors.collate``), so the
    response columns are the last T of the sequence and ``logits_to_keep=T+1`` computes logits
    for those positions only (plus one, dropped), never for the prompt's image tokens.
    """
    from processors import model_inputs

    t = batch["responses"].shape[1]
    return model(**to_device(model_inputs(batch), model), logits_to_keep=t + 1, use_cache=False).logits[:, :-1]


def to_device(batch: dict, model) -> dict:
    """Moves a batch's tensors to the model's device (a no-op on CPU)."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def response_logprobs(model, batch: dict, suppressed_ids=None, temperature: float = 1.0,
                      chunk_size: int = 1024, with_entropy: bool = False, with_full: bool = False) -> dict:
    """Sampled-token log-probs [B, T] (and optionally entropy [B, T], full log-probs [B, T, V])."""
    from .algo.logprobs import entropy_from_logits, log_softmax_full, selective_log_softmax

    logits = response_logits(model, batch)
    out = {"logprobs": selective_log_softmax(logits, batch["responses"].to(logits.device), suppressed_ids, temperature,
                                             chunk_size)}
    if with_entropy:
        out["entropy"] = entropy_from_logits(logits, suppressed_ids, temperature, chunk_size)
    if with_full:
        out["full_logprobs"] = log_softmax_full(logits, suppressed_ids, temperature)
    return out


def _base_and_head(model):
    """(the backbone returning hidden states, the output head) of a Hugging Face LM or VLM."""
    base = getattr(model, "model", None)
    head = model.get_output_embeddings()
    if base is None or head is None:
        raise TypeError(f"{type(model).__name__} has no .model backbone / output head for chunked scoring")
    return base, head


def score_response_tokens(model, batch: dict, suppressed_ids=None, temperature: float = 1.0,
                          chunk_size: int = 256, topk: int = 0, full: bool = False) -> dict:
    """No-grad sampled-token log-probs [B, T] without ever building the [B, T, V] logits.

    The backbone runs once; the output head is applied to ``chunk_size`` response positions at a
    time, each chunk upcast to float32 and reduced to gather minus logsumexp (and optionally the
    top-k or the full log-probs, which are [B, T, K] / [B, T, V] by nature).
    """
    from processors import model_inputs

    from .algo.logprobs import log_softmax_full, selective_log_softmax

    base, head = _base_and_head(model)
    t = batch["responses"].shape[1]
    with torch.no_grad():
        hidden = base(**to_device(model_inputs(batch), model), use_cache=False).last_hidden_state[:, -t - 1:-1]
        b = hidden.shape[0]
        flat, ids = hidden.reshape(b * t, -1), batch["responses"].to(hidden.device).reshape(b * t)
        out_lp, out_topk_v, out_topk_i, out_full = [], [], [], []
        for start in range(0, b * t, chunk_size):
            logits = head(flat[start:start + chunk_size])[None]
            rows = ids[start:start + chunk_size][None]
            out_lp.append(selective_log_softmax(logits, rows, suppressed_ids, temperature, chunk_size)[0])
            if topk or full:
                lp_all = log_softmax_full(logits, suppressed_ids, temperature)[0]
                if topk:
                    v, i = lp_all.topk(topk, dim=-1)
                    out_topk_v.append(v)
                    out_topk_i.append(i)
                if full:
                    out_full.append(lp_all)
    out = {"logprobs": torch.cat(out_lp).view(b, t)}
    if topk:
        out["topk_logprobs"], out["topk_ids"] = torch.cat(out_topk_v).view(b, t, topk), torch.cat(out_topk_i).view(b, t, topk)
    if full:
        out["full_logprobs"] = torch.cat(out_full).view(b, t, -1)
    return out
