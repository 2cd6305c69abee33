"""Teacher-perspective order consistency and margin calibration (RECIPE.md section 4).

Notation: G_i is the trajectory return of rollout i (the masked mean of its token advantages);
S+ / S- are the correct / incorrect rollouts of a group. A group is "mixed" when both are present.
Rollouts with ``correct == -1`` (unknown, or no counted token) take no part.
"""

from __future__ import annotations

from typing import Literal

import torch

from .balance import Scope  # noqa: F401 - one definition of the group / global scope, shared

MarginMode = Literal["mean", "minmax"]
Direction = Literal["both", "correct_up", "incorrect_down"]


def trajectory_returns(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] G_i = sum_t A_it m_it / sum_t m_it (0 for a rollout with no counted token).

    NOTE: the reference release averages over all response tokens, counting masked ones as 0;
    this is the masked mean (RECIPE 4).
    """
    mask = mask.to(advantages.dtype)
    return (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def _groups(group_ids: torch.Tensor, scope: Scope) -> tuple[torch.Tensor, int]:
    if scope == "global":
        return torch.zeros_like(group_ids), 1
    uniq, group_index = torch.unique(group_ids, return_inverse=True)
    return group_index, len(uniq)


def group_margins(returns: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor,
                  mode: MarginMode = "mean", scope: Scope = "group"):
    """Per-group margin and whether the group is mixed.

        mean:   m = mean_{S+} G - mean_{S-} G
        minmax: m = min_{S+} G - max_{S-} G
    Returns (inverse [B] group index of each rollout, margin [K], mixed [K] bool).
    """
    group_index, k = _groups(group_ids, scope)
    pos, neg = correct == 1, correct == 0
    zeros = torch.zeros(k, dtype=returns.dtype, device=returns.device)
    n_pos = zeros.scatter_add(0, group_index, pos.to(returns.dtype))
    n_neg = zeros.scatter_add(0, group_index, neg.to(returns.dtype))
    mixed = (n_pos > 0) & (n_neg > 0)
    if mode == "mean":
        s_pos = zeros.scatter_add(0, group_index, torch.where(pos, returns, 0.0))
        s_neg = zeros.scatter_add(0, group_index, torch.where(neg, returns, 0.0))
        margin = s_pos / n_pos.clamp(min=1) - s_neg / n_neg.clamp(min=1)
    elif mode == "minmax":
        inf = torch.full((k,), float("inf"), dtype=returns.dtype, device=returns.device)
        min_pos = inf.scatter_reduce(0, group_index, torch.where(pos, returns, float("inf")), "amin")
        max_neg = (-inf).scatter_reduce(0, group_index, torch.where(neg, returns, float("-inf")), "amax")
        margin = torch.where(mixed, min_pos - max_neg, torch.zeros_like(min_pos))
    else:
        raise ValueError(f"unknown margin mode {mode!r}")
    return group_index, torch.where(mixed, margin, torch.zeros_like(margin)), mixed


def margin_shift(advantages: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor,
                 delta: float = 0.0, mode: MarginMode = "mean", direction: Direction = "both",
                 scope: Scope = "group"):
    """Outcome-guided margin shift (RECIPE 4, the main method).

    In each mixed group with margin m < delta, lambda = delta - m is added to the token advantages:
        both            +lambda/2 on correct rollouts, -lambda/2 on incorrect ones (Spread)
        correct_up      +lambda on correct rollouts (Lift)
        incorrect_down  -lambda on incorrect rollouts
    Only counted tokens move (the shift is multiplied by ``mask``), so G moves by exactly the
    shift and, in either mode, the margin after the shift equals delta.

    Args: advantages, mask [B, T]; correct [B] (1 / 0 / -1); group_ids [B].
    Returns: (new advantages [B, T], per-rollout shift [B], lambda per group [K]).
    """
    returns = trajectory_returns(advantages, mask)
    group_index, margin, mixed = group_margins(returns, correct, group_ids, mode, scope)
    lam = torch.where(mixed & (margin < delta), delta - margin, torch.zeros_like(margin))
    lam_row = lam[group_index]
    pos, neg = (correct == 1).to(advantages.dtype), (correct == 0).to(advantages.dtype)
    if direction == "both":
        shift = lam_row * (0.5 * pos - 0.5 * neg)
    elif direction == "correct_up":
        shift = lam_row * pos
    elif direction == "incorrect_down":
        shift = -lam_row * neg
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return advantages + shift[:, None] * mask.to(advantages.dtype), shift, lam


def shift_dropped_tokens(advantages: torch.Tensor, loss_mask: torch.Tensor, shift: torch.Tensor,
                         dropped: torch.Tensor):
    """``margin.reach: response``: the per-rollout ``shift`` [B] also moves the ``dropped`` tokens [B, T] (those the
    log-ratio mask left out) of every shifted rollout; they join the loss carrying the shift alone (their OPD
    advantage is 0). Returns (advantages, loss mask, the tokens reached [B, T])."""
    extra = dropped * (shift != 0).to(dropped.dtype)[:, None]
    return advantages + shift[:, None] * extra, loss_mask + extra, extra


def _margin_of(values_pos: list[float], values_neg: list[float], mode: MarginMode) -> float:
    if mode == "mean":
        return sum(values_pos) / len(values_pos) - sum(values_neg) / len(values_neg)
    return min(values_pos) - max(values_neg)


def greedy_margin_mask(returns: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor,
                       delta: float = 0.0, mode: MarginMode = "mean", scope: Scope = "group",
                       min_retain: float = 0.25) -> torch.Tensor:
    """Greedy margin mask (RECIPE 4, the alternative): [B] 1 keep / 0 masked.

    In each mixed group, repeatedly mask either the worst correct rollout (lowest G) or the best
    incorrect one (highest G), whichever raises the margin more, until m >= delta, no removal
    raises it, or a class would fall below max(1, int(n_class * min_retain)).
    """
    keep = torch.ones(returns.shape[0], device=returns.device)
    group_index, k = _groups(group_ids, scope)
    g_list, correct = returns.tolist(), correct.tolist()
    for g in range(k):
        rows = (group_index == g).nonzero().flatten().tolist()
        pos = sorted((r for r in rows if correct[r] == 1), key=lambda r: g_list[r])
        neg = sorted((r for r in rows if correct[r] == 0), key=lambda r: g_list[r])
        if not pos or not neg:
            continue
        floor_pos, floor_neg = max(1, int(len(pos) * min_retain)), max(1, int(len(neg) * min_retain))
        while True:
            m = _margin_of([g_list[r] for r in pos], [g_list[r] for r in neg], mode)
            if m >= delta:
                break
            options = []
            if len(pos) - 1 >= floor_pos:
                options.append((_margin_of([g_list[r] for r in pos[1:]], [g_list[r] for r in neg], mode), "pos"))
            if len(neg) - 1 >= floor_neg:
                options.append((_margin_of([g_list[r] for r in pos], [g_list[r] for r in neg[:-1]], mode), "neg"))
            if not options:
                break
            best, which = max(options)
            if best <= m:
                break
            if which == "pos":
                keep[pos.pop(0)] = 0.0
            else:
                keep[neg.pop()] = 0.0
    return keep


def order_consistency(returns: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """Per-step diagnostics of the teacher's aggregated guidance (RECIPE 4).

    inversion_rate      fraction of (correct, incorrect) pairs of the same group with G+ < G-
    violating_groups    fraction of mixed groups with at least one inverted pair
    mean_g_correct / mean_g_incorrect over all rollouts with a known outcome
    margin_mean / margin_minmax averaged over mixed groups; mixed_groups their count
    """
    pos, neg = correct == 1, correct == 0
    same = group_ids[:, None] == group_ids[None, :]
    pairs = same & pos[:, None] & neg[None, :]
    inverted = pairs & (returns[:, None] < returns[None, :])
    n_pairs = pairs.sum().item()
    group_index, m_mean, mixed = group_margins(returns, correct, group_ids, "mean")
    _, m_minmax, _ = group_margins(returns, correct, group_ids, "minmax")
    n_mixed = mixed.sum().item()
    viol = torch.zeros(len(mixed), dtype=torch.bool, device=mixed.device).index_put_((group_index,), inverted.any(1), accumulate=True)
    return {
        "inversion_rate": inverted.sum().item() / n_pairs if n_pairs else 0.0,
        "violating_groups": (viol & mixed).sum().item() / n_mixed if n_mixed else 0.0,
        "mean_g_correct": returns[pos].mean().item() if pos.any() else 0.0,
        "mean_g_incorrect": returns[neg].mean().item() if neg.any() else 0.0,
        "margin_mean": m_mean[mixed].mean().item() if n_mixed else 0.0,
        "margin_minmax": m_minmax[mixed].mean().item() if n_mixed else 0.0,
        "mixed_groups": float(n_mixed),
    }
