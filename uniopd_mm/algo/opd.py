"""On-policy distillation rewards and token masks (RECIPE.md section 1)."""

from __future__ import annotations

import torch


def opd_advantages(teacher_logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                   response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token OPD advantage, the sampled-token negative reverse KL (RECIPE 1).

        A_t = r_t = log pi_T(o_t | x_T, o_<t) - log pi_old(o_t | x_S, o_<t)

    No discount, no normalisation, no baseline.

    Args:
        teacher_logprobs, old_logprobs: [B, T] log-probs of the sampled tokens.
        response_mask: [B, T], 1 where the token counts.
    Returns:
        [B, T] advantages, 0 where the mask is 0 (so -inf/NaN at padding never leaks).
    """
    advantages = teacher_logprobs - old_logprobs
    return torch.where(response_mask.bool(), advantages, torch.zeros_like(advantages))


def logratio_mask(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor,
                  threshold: float | None) -> torch.Tensor:
    """[B, T] 1 where |log pi_theta - log pi_T| < threshold (RECIPE 1; reference default 10).

    ``threshold=None`` keeps every token. Non-finite differences are always dropped.
    """
    diff = (student_logprobs - teacher_logprobs).abs()
    keep = torch.isfinite(diff)
    if threshold is not None:
        keep &= diff < threshold
    return keep.to(student_logprobs.dtype)


def teacher_failure_mask(teacher_logprobs: torch.Tensor, response_mask: torch.Tensor,
                         failed: torch.Tensor) -> torch.Tensor:
    """[B] 1 for samples whose teacher scoring succeeded (RECIPE 1).

    A sample fails when the scorer flagged it (``failed`` [B] bool: error, length mismatch) or
    when any of its response tokens has a NaN/inf teacher log-prob. A failed sample is masked whole.
    """
    bad_token = ~torch.isfinite(teacher_logprobs) & response_mask.bool()
    return (~(failed.bool() | bad_token.any(dim=-1))).to(teacher_logprobs.dtype)
