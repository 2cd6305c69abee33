"""Sampled-token log-probabilities from logits, chunked so no float32 [B, T, V] is built at once."""

from __future__ import annotations

import torch


def suppress(logits: torch.Tensor, suppressed_ids: list[int] | torch.Tensor | None, inplace: bool = False) -> torch.Tensor:
    """Sets the logits of never-sampled tokens to -inf (out of place; ``inplace`` for a tensor the caller just made,
    which saves a copy of [rows, V]).

    The same ids must be suppressed in the rollout, in the student's and the teacher's training
    log-probs and in greedy evaluation; otherwise the policy gradient drains probability into
    tokens that are never sampled (docs/data.md, Processors).
    """
    if suppressed_ids is None or len(suppressed_ids) == 0:
        return logits
    out = logits if inplace else logits.clone()
    out[..., suppressed_ids] = float("-inf")
    return out


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, suppressed_ids=None,
                          temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """log softmax(logits / temperature)[ids], computed as gather minus logsumexp.

    Args:
        logits: [B, T, V], any float dtype.
        ids: [B, T] token ids whose log-probability is wanted.
        suppressed_ids: vocabulary ids given probability 0.
        temperature: the sampling temperature (logits are divided by it).
        chunk_size: rows of the flattened [B*T, V] upcast to float32 at a time.
    Returns:
        [B, T] float32: log p(ids_t | ...). A suppressed id gets -inf.
    """
    b, t, v = logits.shape
    flat, flat_ids = logits.reshape(b * t, v), ids.reshape(b * t)
    out = torch.empty(b * t, dtype=torch.float32, device=logits.device)
    for start in range(0, b * t, chunk_size):
        rows = suppress(flat[start:start + chunk_size].float() / temperature, suppressed_ids, inplace=True)
        picked = rows.gather(-1, flat_ids[start:start + chunk_size, None]).squeeze(-1)
        out[start:start + chunk_size] = picked - torch.logsumexp(rows, dim=-1)
    return out.view(b, t)


def log_softmax_full(logits: torch.Tensor, suppressed_ids=None, temperature: float = 1.0) -> torch.Tensor:
    """[B, T, V] float32 log-probabilities over the whole vocabulary (for full-vocabulary losses)."""
    return torch.log_softmax(suppress(logits.float() / temperature, suppressed_ids, inplace=True), dim=-1)


def entropy_from_logits(logits: torch.Tensor, suppressed_ids=None, temperature: float = 1.0,
                        chunk_size: int = 1024) -> torch.Tensor:
    """[B, T] entropy H = -sum_v p_v log p_v of softmax(logits / temperature), chunked over rows."""
    b, t, v = logits.shape
    flat = logits.reshape(b * t, v)
    parts = []
    for start in range(0, b * t, chunk_size):
        logp = log_softmax_full(flat[start:start + chunk_size], suppressed_ids, temperature)
        parts.append(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1))
    return torch.cat(parts).view(b, t)
