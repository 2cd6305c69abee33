"""Outcome (verifier) rewards as advantages: the baselines the recipe is compared with.

- ``grpo``: outcome-only RL. The verifier's reward (1 correct, 0 incorrect), normalised within each
  prompt's group, (R_i - mean_g) / (std_g + eps), on every token of the rollout; no teacher.
- ``opd+outcome``: OPD with the task reward added, as verl's distillation recipes offer it: every
  token's OPD advantage plus ``coef`` times the rollout's group-normalised outcome advantage.
- ``constant``: the same constant (negative by default) on every sampled token, no teacher and no verifier:
  the control "Does OPD really distill?" (arXiv 2608.31046) asks every OPD ablation to carry; what it learns
  is what lowering the probability of one's own samples does (a sharper or broader distribution), not a signal.

Rollouts whose outcome is unknown (``correct == -1``) get no outcome advantage and take no part in
their group's statistics.
"""

from __future__ import annotations

import torch


def group_normalised_outcome(correct: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6,
                             scale_by_std: bool = True) -> torch.Tensor:
    """[B] (R_i - mean of R in i's group) / (std of R in the group + eps), R_i = correct_i in {0, 1}.

    The std is the unbiased one (torch's default, as GRPO implementations use); a group with one known
    rollout, or all rollouts equal, gets advantage 0. Unknown rollouts (``correct == -1``) get 0.
    """
    known = correct >= 0
    reward = correct.clamp(min=0).to(torch.float32)
    out = torch.zeros_like(reward)
    for g in torch.unique(group_ids[known]):
        rows = known & (group_ids == g)
        r = reward[rows]
        if r.numel() < 2:
            continue
        centred = r - r.mean()
        out[rows] = centred / (r.std() + eps) if scale_by_std else centred
    return out


def grpo_advantages(correct: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] the group-normalised outcome on every counted token (0 elsewhere)."""
    advantages = group_normalised_outcome(correct, group_ids).to(response_mask.dtype)
    return advantages[:, None] * response_mask


def add_outcome(advantages: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor,
                response_mask: torch.Tensor, coef: float) -> torch.Tensor:
    """[B, T] OPD advantages plus ``coef`` times the rollout's group-normalised outcome on its counted tokens."""
    return advantages + coef * grpo_advantages(correct, group_ids, response_mask)


def constant_advantages(response_mask: torch.Tensor, value: float) -> torch.Tensor:
    """[B, T] ``value`` on every counted token (0 elsewhere)."""
    return response_mask * value
