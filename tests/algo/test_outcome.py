"""Outcome advantages (GRPO, and OPD plus the task reward) with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from uniopd_mm.algo.outcome import add_outcome, constant_advantages, grpo_advantages, group_normalised_outcome

pytestmark = pytest.mark.usefixtures("algo_device")
T = torch.tensor


def test_group_normalised_outcome_by_hand():
    correct = T([1, 0, 0, 1, 1, 1, -1, 0, 1])
    groups = T([0, 0, 0, 0, 1, 1, 2, 2, 2])
    advantages = group_normalised_outcome(correct, groups)
    # group 0: R = 1,0,0,1, mean 1/2, unbiased std sqrt(1/3): +-(1/2) / sqrt(1/3) = +-0.8660
    s = 0.5 / math.sqrt(1 / 3)
    # group 1: all correct, no signal; group 2: the unknown rollout takes no part, R = 0,1: std sqrt(1/2)
    expected = [s, -s, -s, s, 0.0, 0.0, 0.0, -0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-5)


def test_grpo_puts_the_outcome_on_counted_tokens_only():
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    advantages = grpo_advantages(T([1, 0]), T([7, 7]), mask)
    a = 0.5 / math.sqrt(0.5)
    assert torch.allclose(advantages, T([[a, a, 0.0], [-a, 0.0, 0.0]]), atol=1e-5)


def test_opd_plus_outcome_adds_coef_times_the_group_advantage():
    opd = T([[0.5, -1.0], [2.0, 0.0]])
    mask = T([[1.0, 1.0], [1.0, 1.0]])
    out = add_outcome(opd, T([0, 1]), T([3, 3]), mask, coef=2.0)
    a = 0.5 / math.sqrt(0.5)
    assert torch.allclose(out, T([[0.5 - 2 * a, -1.0 - 2 * a], [2.0 + 2 * a, 2 * a]]), atol=1e-5)
    assert add_outcome(opd, T([0, 1]), T([3, 3]), mask, coef=0.0).tolist() == opd.tolist()


def test_constant_control_puts_the_value_on_counted_tokens_only():
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert constant_advantages(mask, -1.0).tolist() == [[-1.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]
    assert constant_advantages(mask, 0.5).tolist() == [[0.5, 0.5, 0.0], [0.5, 0.0, 0.0]]
