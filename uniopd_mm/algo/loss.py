"""Policy losses: the PPO clipped surrogate, its aggregations, KL-to-reference and entropy terms,
and distribution-matching losses (forward KL, reverse KL, generalised JSD) for comparison."""

from __future__ import annotations

import math
from typing import Literal

import torch

Aggregation = Literal["seq_mean_token_mean", "token_mean"]


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: Aggregation,
              normalizer: float | None = None) -> torch.Tensor:
    """Reduces [B, T] per-token values to a scalar (RECIPE 1).

    ``seq_mean_token_mean``: mean over a sequence's counted tokens, then the sum over sequences
    divided by ``normalizer`` (default: the number of sequences with any counted token).
    ``token_mean``: the sum over all counted tokens divided by ``normalizer`` (default: their number).
    Pass the global count (across micro-batches and ranks, divided by the world size when
    gradients are averaged) so micro-batches add up to the mean over the whole batch.
    """
    mask = mask.to(values.dtype)
    values = torch.where(mask.bool(), values, torch.zeros_like(values))  # NaN/inf at masked positions never leak
    if mode == "token_mean":
        total = (values * mask).sum()
        denom = normalizer if normalizer is not None else mask.sum().clamp(min=1.0)
        return total / denom
    if mode == "seq_mean_token_mean":
        tokens = mask.sum(-1)
        seq_means = (values * mask).sum(-1) / tokens.clamp(min=1.0)
        denom = normalizer if normalizer is not None else (tokens > 0).sum().clamp(min=1)
        return seq_means.sum() / denom
    raise ValueError(f"unknown aggregation {mode!r}")


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip_low: float = 0.2, clip_high: float = 0.28,
                  agg: Aggregation = "seq_mean_token_mean", normalizer: float | None = None):
    """PPO clipped surrogate with asymmetric clipping (RECIPE 1).

        rho_t = exp(log pi_theta - log pi_old)
        l_t   = -min(rho_t A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) A_t)

    Args: [B, T] tensors; ``mask`` 1 where the token counts.
    Returns: (loss scalar, stats dict over counted tokens, detached): ``clip_fraction``, the share of tokens
    where clipping is active (the clipped term is the smaller one and so the one taken, as verl and TRL
    count it; a ratio outside the range whose unclipped term wins does not count), and ``approx_kl``.
    """
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    loss = aggregate(per_token, mask, agg, normalizer)
    with torch.no_grad():
        m = mask.bool()
        n = m.sum().clamp(min=1)
        stats = {
            "clip_fraction": ((clipped < unclipped) & m).sum() / n,
            "approx_kl": (0.5 * log_ratio.pow(2) * m).sum() / n,
        }
    return loss, stats


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: Literal["k1", "k3"] = "k3") -> torch.Tensor:
    """[B, T] per-token estimate of KL(pi_theta || pi_ref) from sampled tokens.

    k1: log pi_theta - log pi_ref.  k3: exp(d) - d - 1 with d = log pi_ref - log pi_theta (>= 0).
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    d = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


_FLOOR = -1e4  # exp(-1e4) == 0 in float32; keeps -inf (suppressed tokens) out of the arithmetic


def _kl_rows(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over the last axis, with 0 * log 0 = 0.

    NOTE: suppressed tokens are -inf in both; flooring them at -1e4 keeps the forward and the
    backward free of 0 * inf = NaN, and their contribution is exactly 0.
    """
    p_log, q_log = p_log.clamp(min=_FLOOR), q_log.clamp(min=_FLOOR)
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def distribution_loss(student_logp: torch.Tensor, teacher_logp: torch.Tensor,
                      kind: Literal["forward_kl", "reverse_kl", "jsd"], beta: float = 0.5) -> torch.Tensor:
    """[B, T] divergence between token distributions over a shared support (full vocab or top-k).

    Both inputs are [B, T, K] log-probabilities normalised over the same K outcomes.
        forward_kl  KL(p_T || p_S)
        reverse_kl  KL(p_S || p_T)
        jsd         generalised JSD_beta = beta KL(p_T || m) + (1 - beta) KL(p_S || m),
                    m = beta p_T + (1 - beta) p_S (GKD), 0 < beta < 1
    """
    if kind == "forward_kl":
        return _kl_rows(teacher_logp, student_logp)
    if kind == "reverse_kl":
        return _kl_rows(student_logp, teacher_logp)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError("jsd needs 0 < beta < 1")
        teacher_logp, student_logp = teacher_logp.clamp(min=_FLOOR), student_logp.clamp(min=_FLOOR)
        mix = torch.logsumexp(torch.stack([teacher_logp + math.log(beta), student_logp + math.log(1.0 - beta)]), dim=0)
        return beta * _kl_rows(teacher_logp, mix) + (1.0 - beta) * _kl_rows(student_logp, mix)
    raise ValueError(f"unknown distribution loss {kind!r}")


def renormalise_topk(logp: torch.Tensor) -> torch.Tensor:
    """[..., K] log-probs restricted to K outcomes, renormalised to sum to 1 over them."""
    return logp - torch.logsumexp(logp, dim=-1, keepdim=True)
