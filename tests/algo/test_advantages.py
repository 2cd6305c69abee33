"""The advantages stage as one function (algo/advantages.py): hand-computed cases on a whole step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from uniopd_mm.algo.advantages import compute_advantages

pytestmark = pytest.mark.usefixtures("algo_device")
T = torch.tensor


def _algo(shift=False, mask=False, balance=False, delta=0.0, direction="both", reach="loss_mask", advantage="opd"):
    return SimpleNamespace(
        balance=SimpleNamespace(enabled=balance, ratio=1.0, scope="group"),
        margin=SimpleNamespace(shift=shift, mask=mask, delta=delta, mode="mean", direction=direction, scope="group",
                               reach=reach, min_retain=0.25),
        advantage=advantage, outcome_coef=1.0)


def _step():
    # one prompt, two rollouts: the correct one gets r_t = -1, -1 (G+ = -1); the incorrect one +1, +1 (G- = 1)
    teacher_logprobs = T([[-2.0, -2.0], [-1.0, -1.0]])
    old_logprobs = T([[-1.0, -1.0], [-2.0, -2.0]])
    return teacher_logprobs, old_logprobs, torch.ones(2, 2), T([1, 0]), T([7, 7])


def test_plain_opd_is_the_log_ratio_and_measures_the_inversion():
    advantages, mask, m = compute_advantages(*_step(), _algo())
    assert advantages.tolist() == [[-1.0, -1.0], [1.0, 1.0]]  # log pi_T - log pi_old
    assert torch.equal(mask, torch.ones(2, 2))
    # one (correct, incorrect) pair, inverted: G+ = -1 < G- = 1; margin_mean = -2
    assert m["margin/inversion_rate"] == 1.0 and m["margin/margin_mean"] == -2.0 and m["margin/mixed_groups"] == 1.0
    assert not any(k.startswith("margin_after/") for k in m)


def test_spread_shift_restores_the_order_to_delta():
    # lambda = delta - m = 1 - (-2) = 3: +1.5 on the correct rollout's tokens, -1.5 on the incorrect one's
    advantages, _, m = compute_advantages(*_step(), _algo(shift=True, delta=1.0))
    assert advantages.tolist() == [[0.5, 0.5], [-0.5, -0.5]]
    assert m["margin/lambda_mean"] == 3.0 and m["margin/shifted_groups"] == 1.0
    assert m["margin_after/inversion_rate"] == 0.0 and m["margin_after/margin_mean"] == pytest.approx(1.0)


def test_unknown_and_empty_rollouts_take_no_part():
    teacher_logprobs, old_logprobs, mask, _, group = _step()
    # the incorrect rollout has no counted token: no mixed group, no shift
    mask = T([[1.0, 1.0], [0.0, 0.0]])
    advantages, _, m = compute_advantages(teacher_logprobs, old_logprobs, mask, T([1, 0]), group, _algo(shift=True, delta=1.0))
    assert advantages.tolist() == [[-1.0, -1.0], [0.0, 0.0]] and m["margin/mixed_groups"] == 0.0


def test_grpo_replaces_the_token_signal_with_the_group_normalised_outcome():
    # rewards 1 and 0: mean 0.5, unbiased std sqrt(0.5) -> +-0.5 / 0.7071 on every counted token
    advantages, _, _ = compute_advantages(*_step(), _algo(advantage="grpo"))
    assert advantages[0].tolist() == pytest.approx([0.7071, 0.7071], abs=1e-3)
    assert advantages[1].tolist() == pytest.approx([-0.7071, -0.7071], abs=1e-3)


def test_per_teacher_inversion_rate():
    teacher_logprobs, old_logprobs, mask, _, _ = _step()
    # teacher b's group is in order: its correct rollout gets r = -1 - (-2) = +1, its incorrect one -1
    teacher_logprobs, old_logprobs = torch.cat([teacher_logprobs, T([[-1.0, -1.0], [-2.0, -2.0]])]), torch.cat([old_logprobs, T([[-2.0, -2.0], [-1.0, -1.0]])])
    _, _, m = compute_advantages(teacher_logprobs, old_logprobs, torch.cat([mask, mask]), T([1, 0, 1, 0]), T([0, 0, 1, 1]), _algo(),
                                 teacher_ids=T([0, 0, 1, 1]), teacher_names=["a", "b"])
    assert m["teacher/a/inversion_rate"] == 1.0 and m["teacher/b/inversion_rate"] == 0.0
    assert m["margin/inversion_rate"] == 0.5  # one of the two pairs
