"""Student-perspective data balancing (RECIPE.md section 3)."""

from __future__ import annotations

import math
from typing import Literal

import torch

Scope = Literal["group", "global"]  # a group = the rollouts of one prompt; global = the whole batch


def online_balance_keep(correct: torch.Tensor, group_ids: torch.Tensor, ratio: float = 1.0,
                        scope: Scope = "group", generator: torch.Generator | None = None) -> torch.Tensor:
    """Online correctness-aware balancing (RECIPE 3b): which rollouts keep their loss.

    Within each group (scope "group": rollouts of one prompt; "global": the whole batch) holding
    both classes, randomly drops rollouts of the majority class until correct : incorrect = r:
        n+ / n- > r  ->  keep max(1, round(r * n-)) correct rollouts
        n+ / n- < r  ->  keep max(1, round(n+ / r)) incorrect rollouts
    r = 0 keeps only incorrect rollouts, r = inf only correct ones. Groups with one class, and
    unknown rollouts, are left untouched.

    Args:
        correct: [B] int, 1 correct, 0 incorrect, -1 unknown (or no counted token).
        group_ids: [B] group of each rollout.
        ratio: the target r >= 0 (``math.inf`` allowed).
        generator: seeded, so a run is reproducible (a CPU generator, whatever the inputs' device).
    Returns:
        [B] float, 1 keep / 0 dropped, on the inputs' device.
    """
    if ratio < 0:
        raise ValueError("ratio must be >= 0")
    keep = torch.ones(correct.shape[0], device=correct.device)
    groups = torch.zeros_like(group_ids) if scope == "global" else group_ids
    for g in torch.unique(groups).tolist():
        rows = (groups == g).nonzero().flatten()
        pos = rows[correct[rows] == 1]
        neg = rows[correct[rows] == 0]
        n_p, n_n = len(pos), len(neg)
        if n_p == 0 or n_n == 0:
            continue
        if math.isinf(ratio):
            drop = neg
        elif ratio == 0:
            drop = pos
        elif n_p / n_n > ratio:
            k = max(1, round(ratio * n_n))
            drop = pos[torch.randperm(n_p, generator=generator)[: n_p - k].to(pos.device)]
        elif n_p / n_n < ratio:
            k = max(1, round(n_p / ratio))
            drop = neg[torch.randperm(n_n, generator=generator)[: n_n - k].to(neg.device)]
        else:
            continue
        keep[drop] = 0.0
    return keep


def difficulty_factors(counts: list[int], max_factor: int = 4, include_easy: bool = False) -> list[int]:
    """Offline difficulty-aware upsampling factors (RECIPE 3a).

    ``counts[k]`` = number of prompts with k correct rollouts out of N = len(counts) - 1.
    Medium buckets (1..N-1; 1..N with ``include_easy``) are repeated
        f_b = min(max_factor, max(1, round(target / n_b))),  target = max_b n_b,
    toward a flat histogram; every other bucket keeps factor 1 (no prompt is ever dropped).
    """
    n = len(counts) - 1
    target = max(counts) if counts else 0
    medium = set(range(1, n + (1 if include_easy else 0)))
    return [min(max_factor, max(1, round(target / c))) if (b in medium and c > 0) else 1
            for b, c in enumerate(counts)]
