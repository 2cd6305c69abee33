"""Online and offline balancing with hand-computed cases (RECIPE section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from uniopd_mm.algo.balance import difficulty_factors, online_balance_keep

pytestmark = pytest.mark.usefixtures("algo_device")
T = torch.tensor


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_group_balancing_drops_the_majority_to_ratio():
    # group 0: 3 correct, 1 incorrect -> keep round(1.0 * 1) = 1 correct; group 1: all correct, untouched;
    # group 2: 1 correct, 3 incorrect, one unknown -> keep round(1 / 1.0) = 1 incorrect, unknown untouched
    correct = T([1, 1, 1, 0, 1, 1, 1, 0, 0, 0, -1])
    groups = T([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    keep = online_balance_keep(correct, groups, 1.0, "group", _gen())
    assert keep[:4].tolist().count(0.0) == 2 and keep[3] == 1.0
    assert keep[4:6].tolist() == [1.0, 1.0]
    assert keep[6] == 1.0 and keep[7:10].sum() == 1.0 and keep[10] == 1.0


def test_ratio_extremes_and_non_unit_ratio():
    correct = T([1, 1, 0, 0, 0, 0])
    groups = torch.zeros(6, dtype=torch.long)
    assert online_balance_keep(correct, groups, 0.0).tolist() == [0, 0, 1, 1, 1, 1]  # only incorrect
    assert online_balance_keep(correct, groups, math.inf).tolist() == [1, 1, 0, 0, 0, 0]  # only correct
    # r = 0.75: n+/n- = 0.5 < 0.75 -> keep round(2 / 0.75) = 3 incorrect
    keep = online_balance_keep(correct, groups, 0.75, generator=_gen())
    assert keep[:2].tolist() == [1, 1] and keep[2:].sum() == 3


def test_balancing_changes_the_loss_mask():
    """The reference release shipped this as a no-op; here the mask must actually change."""
    correct = T([1, 1, 1, 0] * 4)
    groups = torch.arange(4).repeat_interleave(4)
    loss_mask = torch.ones(16, 5)
    keep = online_balance_keep(correct, groups, 1.0, "group", _gen())
    balanced = loss_mask * keep[:, None]
    assert not torch.equal(balanced, loss_mask)
    assert balanced.sum() == 5 * 8  # each group keeps 1 correct + 1 incorrect


def test_global_scope_and_reproducibility():
    correct = T([1, 1, 1, 1, 0, 0, 1, 0])
    groups = T([0, 0, 1, 1, 1, 2, 2, 3])
    keep = online_balance_keep(correct, groups, 1.0, "global", _gen(3))
    assert keep[correct == 1].sum() == 3 and keep[correct == 0].sum() == 3  # 5 correct -> 3, 3 incorrect kept
    assert torch.equal(keep, online_balance_keep(correct, groups, 1.0, "global", _gen(3)))


def test_difficulty_factors_hand_computed():
    # N = 4 rollouts: buckets 0..4 with counts [40, 10, 5, 0, 20]; target = 40
    # bucket 1: round(40/10) = 4; bucket 2: round(40/5) = 8 -> capped at 4; bucket 3 empty; 0 and 4 keep 1
    assert difficulty_factors([40, 10, 5, 0, 20], max_factor=4) == [1, 4, 4, 1, 1]
    # include_easy: bucket 4 (all correct) counts as medium: round(40/20) = 2
    assert difficulty_factors([40, 10, 5, 0, 20], max_factor=4, include_easy=True) == [1, 4, 4, 1, 2]
    # a bucket at the target keeps 1; factors are never below 1
    assert difficulty_factors([3, 30, 29, 1]) == [1, 1, 1, 1]
