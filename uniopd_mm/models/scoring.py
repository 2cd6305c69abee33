"""Token log-probabilities of response tokens: the student's (training, pi_old) and the HF teacher's
(chunked over the vocabulary), and prompt sharing, which runs each distinct prompt once and shares its
KV cache (and Qwen-VL's M-RoPE positions) across that prompt's samples."""

from __future__ import annotations

import torch

from .loading import to_device


def response_logits(model, batch: dict, share_prompts: bool = False):
    """[B, T, V] logits predicting the response tokens of a training-layout batch.

    Prompts are padded on the left and responses on the right (``processors.collate``), so the
    response columns are the last T of the sequence and ``logits_to_keep=T+1`` computes logits
    for those positions only (plus one, dropped), never for the prompt's image tokens.
    ``share_prompts``: each distinct prompt runs once (:func:`forward_sharing_prompts`).
    """
    from processors import model_inputs

    t = batch["responses"].shape[1]
    groups = prompt_groups(batch, model) if share_prompts else None
    if groups is not None:
        last, resp = forward_sharing_prompts(model, batch, *groups, logits_to_keep=t)
        return torch.cat([last.logits[groups[1]], resp.logits[:, :-1]], 1)
    return model(**to_device(model_inputs(batch), model), logits_to_keep=t + 1, use_cache=False).logits[:, :-1]


def hf_model(model):
    """The Hugging Face model inside a DeepSpeed engine (``.module``) and a PEFT wrapper (``get_base_model``)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwarg(model) -> str:
    """The name a model's forward gives its KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf_model(model).forward).parameters else "past_key_values"


def mrope_module(model):
    """The module of a Qwen-VL model that computes its M-RoPE positions (``compute_3d_position_ids``),
    or None (a text LM, or a transformers without that method)."""
    inner = hf_model(model)
    for m in (inner, getattr(inner, "model", None)):
        if m is not None and hasattr(m, "compute_3d_position_ids") and hasattr(m, "get_rope_index"):
            return m
    return None


def prompt_groups(batch: dict, model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row of each distinct prompt [U], each row's prompt among them [B]) of a training-layout
    batch (rows that repeat a prompt are a rollout group's samples); None for a model training under
    gradient checkpointing (which drops the KV cache this needs), and for a batch with visual inputs
    unless the model is a Qwen-VL (M-RoPE positions computed by the model itself) and the batch says
    which rows share a prompt object (``processors.collate``: equal tokens may hold other images).

    NOTE: a batch in which no prompt repeats (U == B) still gets its groups, so it takes the same two
    forwards as every other: under ZeRO-3 on several processes each rank must run the same sequence of
    forwards (a rank's padded one-row micro-batch would otherwise run one while the others run two).
    """
    from processors.base import MODEL_INPUT_KEYS

    module = hf_model(model)
    checkpointing = getattr(module, "is_activation_checkpointing", None)  # transformers >= 5.2x
    if checkpointing is None:
        checkpointing = getattr(module, "is_gradient_checkpointing", False)
    if checkpointing and module.training and torch.is_grad_enabled():
        return None
    w = batch["input_ids"].shape[1] - batch["responses"].shape[1]
    key = [batch["input_ids"][:, :w], batch["attention_mask"][:, :w]]
    if set(batch) & (set(MODEL_INPUT_KEYS) - {"input_ids", "attention_mask", "mm_token_type_ids"}):
        if "prompt_group" not in batch or "row_sizes" not in batch or model is None or mrope_module(model) is None:
            return None
        key.append(batch["prompt_group"][:, None])
    uniq, inverse = torch.unique(torch.cat(key, 1), dim=0, return_inverse=True)
    rows = torch.arange(len(inverse))
    first = torch.full((len(uniq),), len(inverse)).scatter_reduce(0, inverse, rows, "amin")
    return first, inverse


def mrope_positions(model, batch: dict) -> torch.Tensor | None:
    """The full forward's position ids [3 or 4, B, L] of a Qwen-VL model (None for a text LM, whose
    default positions already continue from the KV cache's length): the model's own M-RoPE positions
    for visual batches, its default ``arange`` for text-only ones."""
    import inspect

    module = mrope_module(model)
    if module is None:
        return None
    ids = batch["input_ids"]
    if "image_grid_thw" not in batch and "video_grid_thw" not in batch:
        return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, ids.shape[0], -1)
    params = inspect.signature(module.compute_3d_position_ids).parameters
    extra = {k: batch[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
             if k in params and k in batch}
    # inputs_embeds: only its shape and device are read on this path (no cache: get_rope_index)
    embeds = torch.empty(ids.shape[0], ids.shape[1], 1, device=ids.device)
    return module.compute_3d_position_ids(input_ids=ids, inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                          cache=None, **extra)


def forward_sharing_prompts(model, batch: dict, first: torch.Tensor, inverse: torch.Tensor, call=None, **kwargs):
    """The forward of a training-layout batch with each distinct prompt computed once.

    The prompts (rows ``first``, left-padded, width P, with their visual inputs) run with a KV cache;
    the cache is indexed out to every row (``inverse``); the response columns then run on it with the
    whole [B, P+T] attention mask. Positions are the full forward's at every response token (a Qwen-VL's
    M-RoPE positions are computed once per distinct prompt, by the model's own function, and indexed out),
    so the outputs equal the full forward's at those tokens (to float rounding). Gradients flow through the
    shared prompt states. Returns (the prompt forward's output [U rows], the response forward's output
    [B rows]): the output at column P-1 (the prompt's last)
    predicts the first response token, the response columns' outputs the rest. ``call``: what runs
    the forward (default ``model``; a compiled backbone).
    """
    call = call or model
    batch = to_device(batch, model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    width = ids.shape[1] - batch["responses"].shape[1]
    first, inverse = first.to(ids.device), inverse.to(ids.device)
    prompt = {"input_ids": ids[first, :width], "attention_mask": mask[first, :width]}
    if "mm_token_type_ids" in batch:
        prompt["mm_token_type_ids"] = batch["mm_token_type_ids"][first, :width]
    for key, sizes in batch.get("row_sizes", {}).items():  # the visual tensors of the rows in `first`
        ends = sizes.cumsum(0).tolist()
        parts = [batch[key][ends[r] - int(sizes[r]): ends[r]] for r in first.tolist()]
        prompt[key] = torch.cat(parts, 0)
    positions = None
    if mrope_module(model) is not None:
        # each distinct prompt's positions computed once, over the prompt and a response attended in full: a
        # row's response tokens are text, so its valid ones continue the prompt's positions as in the full
        # forward; a padded response column gets another position, but no valid token attends to it
        rows = {**prompt, "input_ids": ids[first],
                "attention_mask": torch.cat([mask[first, :width], torch.ones_like(mask[first, width:])], 1)}
        if "mm_token_type_ids" in batch:
            rows["mm_token_type_ids"] = batch["mm_token_type_ids"][first]
        positions = mrope_positions(model, rows)[:, inverse]
    response = {}
    if positions is not None:
        prompt["position_ids"] = positions[:, first, :width]
        response["position_ids"] = positions[:, :, width:]
    last = call(**prompt, use_cache=True, **({"logits_to_keep": 1} if "logits_to_keep" in kwargs else {}))
    cache = getattr(last, "cache", None) or getattr(last, "past_key_values", None)
    if cache is None or cache.get_seq_length() != width:
        raise RuntimeError("the prompt forward returned no KV cache to share (gradient checkpointing?)")
    cache.batch_select_indices(inverse)
    resp = call(input_ids=ids[:, width:], attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache},
                **response, **kwargs)
    return last, resp


def response_logprobs(model, batch: dict, suppressed_ids=None, temperature: float = 1.0,
                      chunk_size: int = 1024, with_entropy: bool = False, with_full: bool = False,
                      share_prompts: bool = False) -> dict:
    """Sampled-token log-probs [B, T] (and optionally entropy [B, T], full log-probs [B, T, V])."""
    from ..algo.logprobs import entropy_from_logits, log_softmax_full, selective_log_softmax

    logits = response_logits(model, batch, share_prompts)
    out = {"logprobs": selective_log_softmax(logits, batch["responses"].to(logits.device), suppressed_ids, temperature,
                                             chunk_size)}
    if with_entropy:
        out["entropy"] = entropy_from_logits(logits, suppressed_ids, temperature, chunk_size)
    if with_full:
        out["full_logprobs"] = log_softmax_full(logits, suppressed_ids, temperature)
    return out


def base_and_head(model):
    """(the backbone returning hidden states, the output head) of a Hugging Face LM or VLM."""
    base = getattr(model, "model", None)
    head = model.get_output_embeddings()
    if base is None or head is None:
        raise TypeError(f"{type(model).__name__} has no .model backbone / output head for chunked scoring")
    return base, head


def score_response_tokens(model, batch: dict, suppressed_ids=None, temperature: float = 1.0,
                          chunk_size: int = 256, topk: int = 0, full: bool = False, backbone=None,
                          share_prompts: bool = False) -> dict:
    """No-grad sampled-token log-probs [B, T] without ever building the [B, T, V] logits.

    The backbone runs once; the output head is applied to ``chunk_size`` response positions at a
    time, each chunk upcast to float32 and reduced to gather minus logsumexp (and optionally the
    top-k or the full log-probs, which are [B, T, K] / [B, T, V] by nature). ``backbone``: a callable
    standing in for the model's backbone (a compiled one, :class:`CompiledOrEager`). ``share_prompts``:
    each distinct prompt runs once (:func:`forward_sharing_prompts`).
    """
    from processors import model_inputs

    from ..algo.logprobs import log_softmax_full, selective_log_softmax

    base, head = base_and_head(model)
    t = batch["responses"].shape[1]
    groups = prompt_groups(batch, model) if share_prompts else None
    with torch.no_grad():
        if groups is not None:
            last, resp = forward_sharing_prompts(base, batch, *groups, call=backbone)
            hidden = torch.cat([last.last_hidden_state[groups[1], -1:], resp.last_hidden_state[:, :-1]], 1)
        else:
            hidden = (backbone or base)(**to_device(model_inputs(batch), model),
                                        use_cache=False).last_hidden_state[:, -t - 1:-1]
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
