"""Margin calibration and order consistency: hand-computed cases, invariants, loop references."""

from __future__ import annotations

import itertools

import pytest
import torch

from uniopd_mm.algo.margin import (greedy_margin_mask, group_margins, margin_shift, order_consistency,
                                   trajectory_returns)

pytestmark = pytest.mark.usefixtures("algo_device")
T = torch.tensor


def test_trajectory_returns_masked_mean():
    advantages = T([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [5.0, 5.0, 5.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # (1+2)/2 = 1.5; 4/1 = 4; no counted token -> 0
    assert trajectory_returns(advantages, mask).tolist() == [1.5, 4.0, 0.0]


def test_group_margins_hand_computed():
    g = T([0.5, 0.1, 0.3, -0.2, 0.0, 0.9])
    c = T([1, 1, 0, 0, 1, -1])
    gid = T([0, 0, 0, 0, 1, 1])
    _, m_mean, mixed = group_margins(g, c, gid, "mean")
    # group 0: mean+ = 0.3, mean- = 0.05 -> 0.25; group 1 has no incorrect -> not mixed
    assert mixed.tolist() == [True, False] and m_mean[0].item() == pytest.approx(0.25)
    _, m_mm, _ = group_margins(g, c, gid, "minmax")
    assert m_mm[0].item() == pytest.approx(0.1 - 0.3)  # min+ - max-


def _one_group(direction, mode="mean", delta=0.4):
    advantages = T([[0.2, 0.2], [0.0, 0.0], [0.6, 0.6], [0.0, 0.4]])  # G = 0.2, 0.0, 0.6, 0.2
    mask = torch.ones(4, 2)
    correct = T([1, 1, 0, 0])
    return margin_shift(advantages, mask, correct, torch.zeros(4, dtype=torch.long), delta, mode, direction)


def test_margin_shift_directions_hand_computed():
    # mean+ = 0.1, mean- = 0.4 -> m = -0.3 < 0.4 -> lambda = 0.7
    new, shift, lam = _one_group("both")
    assert lam.tolist() == pytest.approx([0.7])
    assert shift.tolist() == pytest.approx([0.35, 0.35, -0.35, -0.35])
    assert new[0].tolist() == pytest.approx([0.55, 0.55])
    _, shift, _ = _one_group("correct_up")
    assert shift.tolist() == pytest.approx([0.7, 0.7, 0.0, 0.0])
    _, shift, _ = _one_group("incorrect_down")
    assert shift.tolist() == pytest.approx([0.0, 0.0, -0.7, -0.7])
    # minmax: min+ = 0.0, max- = 0.6 -> m = -0.6 -> lambda = 1.0
    _, _, lam = _one_group("both", "minmax")
    assert lam.tolist() == pytest.approx([1.0])


@pytest.mark.parametrize("mode, direction", list(itertools.product(["mean", "minmax"], ["both", "correct_up", "incorrect_down"])))
def test_gap_equals_delta_after_shift(mode, direction):
    torch.manual_seed(0)
    advantages, mask = torch.randn(24, 6), (torch.rand(24, 6) > 0.2).float()
    correct = torch.randint(0, 2, (24,))
    correct[::7] = -1
    gid = torch.arange(6).repeat_interleave(4)
    new, _, _ = margin_shift(advantages, mask, correct, gid, 0.4, mode, direction)
    before_inv, m_before, mixed = group_margins(trajectory_returns(advantages, mask), correct, gid, mode)
    _, m_after, _ = group_margins(trajectory_returns(new, mask), correct, gid, mode)
    for g in range(6):
        if mixed[g] and m_before[g] < 0.4:
            assert m_after[g].item() == pytest.approx(0.4, abs=1e-5)
        else:
            assert m_after[g].item() == pytest.approx(m_before[g].item(), abs=1e-6)
    # unknown rollouts and padding never move
    assert torch.equal(new[correct == -1], advantages[correct == -1])
    assert torch.equal(new[mask == 0], advantages[mask == 0])


def test_global_scope_shifts_every_rollout_alike():
    advantages = T([[0.0], [1.0], [0.5], [0.0]])
    correct = T([1, 0, 1, 0])
    gid = T([0, 0, 1, 1])
    # global: mean+ = 0.25, mean- = 0.5 -> m = -0.25, delta 0 -> lambda 0.25 for everyone
    _, shift, lam = margin_shift(advantages, torch.ones(4, 1), correct, gid, 0.0, "mean", "both", "global")
    assert lam.tolist() == pytest.approx([0.25]) and shift.tolist() == pytest.approx([0.125, -0.125, 0.125, -0.125])


def _shift_loop(advantages, mask, correct, gid, delta, mode, direction):
    """Slow reference: one group at a time, plain Python."""
    g = [(sum(a * m for a, m in zip(ar, mr)) / max(sum(mr), 1.0)) for ar, mr in zip(advantages.tolist(), mask.tolist())]
    out = advantages.clone()
    for grp in set(gid.tolist()):
        rows = [i for i in range(len(g)) if gid[i] == grp]
        p = [g[i] for i in rows if correct[i] == 1]
        n = [g[i] for i in rows if correct[i] == 0]
        if not p or not n:
            continue
        m = (sum(p) / len(p) - sum(n) / len(n)) if mode == "mean" else (min(p) - max(n))
        if m >= delta:
            continue
        lam = delta - m
        for i in rows:
            s = {"both": lam / 2 if correct[i] == 1 else -lam / 2 if correct[i] == 0 else 0.0,
                 "correct_up": lam if correct[i] == 1 else 0.0,
                 "incorrect_down": -lam if correct[i] == 0 else 0.0}[direction]
            out[i] = advantages[i] + s * mask[i]
    return out


def test_vectorised_shift_matches_loop_reference():
    gen = torch.Generator().manual_seed(1)
    for trial in range(30):
        b, t = 32, 9
        advantages = torch.randn(b, t, generator=gen)
        mask = (torch.rand(b, t, generator=gen) > 0.3).float()
        correct = torch.randint(-1, 2, (b,), generator=gen)
        gid = torch.randint(0, 6, (b,), generator=gen)
        for mode, direction in itertools.product(["mean", "minmax"], ["both", "correct_up", "incorrect_down"]):
            new, _, _ = margin_shift(advantages, mask, correct, gid, 0.3, mode, direction)
            assert torch.allclose(new, _shift_loop(advantages, mask, correct, gid, 0.3, mode, direction), atol=1e-5)


def test_greedy_margin_mask_hand_computed():
    # one group: correct G = [0.9, -0.5, 0.8, 0.7], incorrect G = [0.6, 0.0]; delta 0.4, mean mode
    g = T([0.9, -0.5, 0.8, 0.7, 0.6, 0.0])
    c = T([1, 1, 1, 1, 0, 0])
    gid = torch.zeros(6, dtype=torch.long)
    # m = 0.475 - 0.3 = 0.175. Drop worst correct (-0.5): 0.8 - 0.3 = 0.5; drop best incorrect (0.6): 0.475 - 0.0
    # = 0.475 -> dropping -0.5 raises the gap more, and 0.5 >= 0.4 stops.
    assert greedy_margin_mask(g, c, gid, 0.4, "mean").tolist() == [1, 0, 1, 1, 1, 1]


def test_greedy_margin_mask_respects_min_retain():
    g = T([-1.0, -0.9, 0.5, 0.6])
    c = T([1, 1, 0, 0])
    keep = greedy_margin_mask(g, c, torch.zeros(4, dtype=torch.long), 1.0, "mean", min_retain=0.25)
    # each class keeps at least max(1, int(2 * 0.25)) = 1 rollout
    assert keep[:2].sum() >= 1 and keep[2:].sum() >= 1
    assert keep.sum() == 2  # it removed one of each, the gap still below delta


def test_order_consistency_hand_computed():
    g = T([0.1, 0.5, 0.3, 0.0, 0.9, 0.2])
    c = T([1, 1, 0, 0, 1, 0])
    gid = T([0, 0, 0, 0, 1, 1])
    s = order_consistency(g, c, gid)
    # group 0 pairs: (0.1,0.3) inverted, (0.1,0.0) ok, (0.5,0.3) ok, (0.5,0.0) ok; group 1: (0.9,0.2) ok -> 1/5
    assert s["inversion_rate"] == pytest.approx(0.2)
    assert s["violating_groups"] == pytest.approx(0.5)
    assert s["mean_g_correct"] == pytest.approx(0.5) and s["mean_g_incorrect"] == pytest.approx(0.5 / 3)
    # margins: group 0 mean 0.3 - 0.15 = 0.15, group 1 0.7 -> 0.425; minmax: (0.1 - 0.3) and 0.7 -> 0.25
    assert s["margin_mean"] == pytest.approx(0.425) and s["margin_minmax"] == pytest.approx(0.25)
    assert s["mixed_groups"] == 2.0
