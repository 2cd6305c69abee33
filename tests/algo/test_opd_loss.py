"""Core OPD math with hand-computed values (RECIPE section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from uniopd_mm.algo.logprobs import entropy_from_logits, selective_log_softmax, suppress
from uniopd_mm.algo.loss import aggregate, distribution_loss, kl_penalty, ppo_clip_loss, renormalise_topk
from uniopd_mm.algo.opd import logratio_mask, opd_advantages, teacher_failure_mask

pytestmark = pytest.mark.usefixtures("algo_device")
T = torch.tensor


def test_opd_advantages_hand_computed():
    teacher = T([[-1.0, -2.0, -0.5], [-0.1, float("nan"), 0.0]])
    old_logprobs = T([[-1.5, -1.0, -0.5], [-0.3, -1.0, 0.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # A = teacher - old_logprobs on counted tokens: [-1+1.5, -2+1, 0] = [0.5, -1, 0]; [-0.1+0.3, 0, 0] = [0.2, 0, 0]
    assert torch.allclose(opd_advantages(teacher, old_logprobs, mask), T([[0.5, -1.0, 0.0], [0.2, 0.0, 0.0]]))


def test_advantage_zero_when_teacher_equals_student():
    logprobs = torch.randn(4, 7)
    assert torch.equal(opd_advantages(logprobs, logprobs, torch.ones(4, 7)), torch.zeros(4, 7))


def test_logratio_mask():
    s = T([[-1.0, -20.0, -3.0]])
    t = T([[-2.0, -1.0, float("-inf")]])
    # |diffs| = 1, 19, inf -> keep, drop (>= 10), drop (non-finite)
    assert logratio_mask(s, t, 10.0).tolist() == [[1.0, 0.0, 0.0]]
    assert logratio_mask(s, t, None).tolist() == [[1.0, 1.0, 0.0]]
    assert logratio_mask(T([[0.0]]), T([[-10.0]]), 10.0).tolist() == [[0.0]]  # the bound is exclusive


def test_teacher_failure_mask():
    logprobs = T([[-1.0, -1.0], [-1.0, float("nan")], [-1.0, float("inf")], [-1.0, -1.0]])
    mask = T([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    failed = T([False, False, False, True])
    # row 1 has a NaN on a counted token; row 2's inf is on padding; row 3 was flagged
    assert teacher_failure_mask(logprobs, mask, failed).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_aggregations_hand_computed():
    v = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # seq means: (1+2+3)/3 = 2, 4/1 = 4 -> (2+4)/2 = 3
    assert aggregate(v, m, "seq_mean_token_mean").item() == pytest.approx(3.0)
    # token mean: (1+2+3+4)/4 = 2.5
    assert aggregate(v, m, "token_mean").item() == pytest.approx(2.5)
    # global normalisers: micro-batches add up to the whole-batch mean
    a = aggregate(v[:1], m[:1], "seq_mean_token_mean", normalizer=2) + aggregate(v[1:], m[1:], "seq_mean_token_mean", normalizer=2)
    assert a.item() == pytest.approx(3.0)
    b = aggregate(v[:1], m[:1], "token_mean", normalizer=4) + aggregate(v[1:], m[1:], "token_mean", normalizer=4)
    assert b.item() == pytest.approx(2.5)


def test_ppo_clip_loss_hand_computed():
    # ratios: exp(log 1.5) = 1.5 (clipped at 1.28), exp(log 0.5) = 0.5 (clipped at 0.8), 1.0
    logp = torch.log(T([[1.5, 0.5, 1.0]]))
    old_logprobs = torch.zeros(1, 3)
    advantages = T([[1.0, 1.0, -2.0]])
    mask = torch.ones(1, 3)
    loss, stats = ppo_clip_loss(logp, old_logprobs, advantages, mask, 0.2, 0.28)
    # token 1: min(1.5*1, 1.28*1) = 1.28; token 2: min(0.5*1, 0.8*1) = 0.5; token 3: min(-2, -2) = -2
    # loss = -(1.28 + 0.5 - 2) / 3 = 0.22 / 3
    assert loss.item() == pytest.approx(0.22 / 3, abs=1e-6)
    # token 1 takes the clipped term (clipping is active); token 2's ratio is outside the range too, but with A > 0
    # its unclipped term 0.5 is the smaller and wins: not counted (as verl's pg_clipfrac and TRL count)
    assert stats["clip_fraction"].item() == pytest.approx(1 / 3)
    # token 2 with A = -1: min(0.5 * -1, 0.8 * -1) = -0.8, the clipped term is taken: counted (and token 1)
    _, stats = ppo_clip_loss(logp, old_logprobs, T([[1.0, -1.0, -2.0]]), mask, 0.2, 0.28)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)


def test_ppo_gradient_is_the_policy_gradient_at_ratio_one():
    logp = torch.zeros(2, 3, requires_grad=True)
    advantages = T([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, _ = ppo_clip_loss(logp, logp.detach(), advantages, mask, agg="seq_mean_token_mean")
    loss.backward()
    # d loss / d logp = -A / (n_tokens of the sequence) / n_sequences
    expected = -advantages / T([[3.0], [2.0]]) / 2 * mask
    assert torch.allclose(logp.grad, expected)


def test_kl_penalty():
    logprobs, ref = T([[-1.0]]), T([[-2.0]])
    assert kl_penalty(logprobs, ref, "k1").item() == pytest.approx(1.0)
    # k3 with d = ref - logprobs = -1: e^-1 + 1 - 1 = 0.3679
    assert kl_penalty(logprobs, ref, "k3").item() == pytest.approx(math.exp(-1.0), abs=1e-6)
    assert kl_penalty(logprobs, logprobs, "k3").item() == 0.0


def test_distribution_losses_hand_computed():
    p_t = torch.log(T([[[0.5, 0.5]]]))
    p_s = torch.log(T([[[0.25, 0.75]]]))
    fkl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    rkl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert distribution_loss(p_s, p_t, "forward_kl").item() == pytest.approx(fkl, abs=1e-6)
    assert distribution_loss(p_s, p_t, "reverse_kl").item() == pytest.approx(rkl, abs=1e-6)
    m = [0.375, 0.625]
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1]))
    assert distribution_loss(p_s, p_t, "jsd", 0.5).item() == pytest.approx(jsd, abs=1e-6)
    assert distribution_loss(p_t, p_t, "jsd", 0.3).item() == pytest.approx(0.0, abs=1e-7)


def test_reverse_kl_gradient_vanishes_where_the_student_is_confidently_wrong():
    """Why OPD stalls on held-out questions (docs/results.md): a student sure of the wrong token (logits 10, 0) under a
    teacher sure of the other (probabilities 1e-7, 1 - 1e-7). The reverse KL is large (~16) but its gradient in the
    logits, p_k (log p_k - log q_k - KL), is eps (log 1/eps + KL) ~ 1.2e-3 with eps = p(right) = 1 / (1 + e^10); the
    forward KL's, p - q, stays ~1 (closed forms, by hand)."""
    z = torch.tensor([[[10.0, 0.0]]], requires_grad=True)
    q = torch.tensor([[[1e-7, 1.0 - 1e-7]]]).log()
    p = torch.softmax(z.detach(), -1)[0, 0]
    eps = p[1].item()  # 1 / (1 + e^10) ~ 4.54e-5
    kl = (p * (p.log() - q[0, 0])).sum()
    rkl = distribution_loss(torch.log_softmax(z, -1), q, "reverse_kl")
    assert rkl.item() == pytest.approx(kl.item(), rel=1e-5) and rkl.item() > 16.0
    (g,) = torch.autograd.grad(rkl.sum(), z)
    hand = p * (p.log() - q[0, 0] - kl)
    assert g[0, 0].tolist() == pytest.approx(hand.tolist(), rel=2e-3)  # float32
    assert g[0, 0, 1].item() == pytest.approx(-eps * (math.log(1 / eps) + kl.item()), rel=2e-3)
    assert 1e-3 < g.abs().max().item() < 1.3e-3
    (g,) = torch.autograd.grad(distribution_loss(torch.log_softmax(z, -1), q, "forward_kl").sum(), z)
    assert g[0, 0].tolist() == pytest.approx((p - q[0, 0].exp()).tolist(), abs=1e-6)
    assert g.abs().max().item() > 0.99


def test_distribution_losses_ignore_suppressed_tokens():
    # a token with -inf in both distributions contributes 0, not NaN
    p = torch.log_softmax(suppress(T([[[1.0, 2.0, 3.0]]]), [2]), -1)
    q = torch.log_softmax(suppress(T([[[2.0, 1.0, 3.0]]]), [2]), -1)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        logits = T([[[2.0, 1.0, 3.0]]], requires_grad=True)
        q = torch.log_softmax(suppress(logits, [2]), -1)
        loss = distribution_loss(p, q, kind).sum()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), kind


def test_renormalise_topk():
    logprobs = torch.log(T([0.2, 0.2]))
    assert torch.allclose(renormalise_topk(logprobs).exp(), T([0.5, 0.5]))


def test_selective_log_softmax_matches_naive_and_chunks():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    ids = torch.randint(0, 9, (3, 5))
    naive = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[..., None])[..., 0]
    for chunk in (1, 4, 1024):
        assert torch.allclose(selective_log_softmax(logits, ids, None, 0.7, chunk), naive, atol=1e-6)
    sup = suppress(logits, [9, 10])
    naive_sup = torch.log_softmax(sup, -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(selective_log_softmax(logits, ids, [9, 10], 1.0, 2), naive_sup, atol=1e-6)
    assert torch.isinf(selective_log_softmax(logits, torch.full((3, 5), 9), [9])).all()


def test_entropy():
    logits = torch.log(T([[[0.5, 0.25, 0.25]]]))
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert entropy_from_logits(logits).item() == pytest.approx(h, abs=1e-6)
    # suppressing the last token renormalises over the other two: 2/3, 1/3
    h2 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert entropy_from_logits(logits, [2]).item() == pytest.approx(h2, abs=1e-6)
