"""The advantages stage (RECIPE 3b, 4, 5) as one function on the whole step's rollouts.

The caller gathers every rank's rollouts first (the training engine does the collectives), so group
and global scopes are computed alike and 1 process equals 2; each rank then keeps its own rows.

Order: online balancing (RECIPE 3b) -> OPD token advantages r_t -> order consistency measured ->
margin shift or greedy margin mask (RECIPE 4) -> measured again -> the outcome baselines, if chosen.
"""

from __future__ import annotations

import torch

from ..config import TEACHERLESS_ADVANTAGES
from .balance import online_balance_keep
from .margin import greedy_margin_mask, margin_shift, order_consistency, shift_dropped_tokens, trajectory_returns
from .opd import opd_advantages
from .outcome import add_outcome, constant_advantages, grpo_advantages


def compute_advantages(teacher_logprobs: torch.Tensor, old_logprobs: torch.Tensor, loss_mask: torch.Tensor,
                       correct: torch.Tensor, group_ids: torch.Tensor, algo, *,
                       generator: torch.Generator | None = None, teacher_ids: torch.Tensor | None = None,
                       teacher_names: list[str] | None = None, ratio_dropped: torch.Tensor | None = None):
    """Returns (advantages [B, T], loss mask [B, T], metrics).

    ``algo`` carries the settings (``balance``, ``margin``, ``advantage``, ``outcome_coef``, as in
    ``AlgoConfig``); ``correct`` is [B] 1 / 0 / -1 (unknown). Rollouts with no counted token count as
    unknown. ``teacher_ids`` ([B] index into ``teacher_names``): the inversion rate per teacher, measured
    where ``margin/inversion_rate`` is (after balancing, before calibration). ``ratio_dropped`` ([B, T]):
    tokens the log-ratio mask dropped, which ``margin.reach: response`` moves as well.
    """
    correct = torch.where(loss_mask.sum(-1) > 0, correct, torch.full_like(correct, -1))
    metrics: dict[str, float] = {}
    if algo.balance.enabled:
        keep = online_balance_keep(correct, group_ids, algo.balance.ratio, algo.balance.scope, generator)
        loss_mask = loss_mask * keep[:, None]
        metrics["balance/dropped"] = float(((keep == 0) & (correct >= 0)).sum().item())
        correct = torch.where(keep > 0, correct, torch.full_like(correct, -1))
    advantages = opd_advantages(teacher_logprobs, old_logprobs, loss_mask)
    returns = trajectory_returns(advantages, loss_mask)
    consistency = order_consistency(returns, correct, group_ids)
    if algo.advantage in TEACHERLESS_ADVANTAGES:  # no teacher ran: no guidance to order, only the outcomes' groups
        consistency = {"mixed_groups": consistency["mixed_groups"]}
    metrics.update({f"margin/{k}": v for k, v in consistency.items()})
    if teacher_ids is not None:
        for k, name in enumerate(teacher_names or []):
            rows = teacher_ids == k
            if rows.any():
                metrics[f"teacher/{name}/inversion_rate"] = order_consistency(
                    returns[rows], correct[rows], group_ids[rows])["inversion_rate"]
    m = algo.margin
    if m.shift:
        advantages, shift, lam = margin_shift(advantages, loss_mask, correct, group_ids, m.delta, m.mode, m.direction,
                                              m.scope)
        if m.reach == "response" and ratio_dropped is not None:
            advantages, loss_mask, extra = shift_dropped_tokens(advantages, loss_mask, shift, ratio_dropped)
            metrics["margin/reached_tokens"] = float(extra.sum().item())
        metrics["margin/lambda_mean"] = lam[lam > 0].mean().item() if (lam > 0).any() else 0.0
        metrics["margin/shifted_groups"] = float((lam > 0).sum().item())
    elif m.mask:
        keep = greedy_margin_mask(returns, correct, group_ids, m.delta, m.mode, m.scope, m.min_retain)
        # RECIPE 7: a masked rollout's advantages become 0 and it stays in the aggregation's denominator,
        # as in the reference code (its loss mask is left as it was)
        advantages = advantages * keep[:, None]
        metrics["margin/masked_rollouts"] = float((keep == 0).sum().item())
        correct = torch.where(keep > 0, correct, torch.full_like(correct, -1))
    if m.shift or m.mask:
        after = order_consistency(trajectory_returns(advantages, loss_mask), correct, group_ids)
        metrics.update({f"margin_after/{k}": v for k, v in after.items()})
    if algo.advantage == "grpo":  # the baselines: outcome only, or OPD plus the outcome (outcome.py)
        advantages = grpo_advantages(correct, group_ids, loss_mask)
    elif algo.advantage == "opd+outcome":
        advantages = add_outcome(advantages, correct, group_ids, loss_mask, algo.outcome_coef)
    elif algo.advantage == "constant":
        advantages = constant_advantages(loss_mask, algo.constant_advantage)
    return advantages, loss_mask, metrics
