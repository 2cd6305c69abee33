"""Step metrics computed from the responses themselves, with hand-counted values."""

from __future__ import annotations

from uniopd_mm.metrics import repeated_ngram_frac


def test_repeated_ngram_frac_counts_repeats_of_earlier_ngrams():
    # 4-grams of 1 2 3 4 1 2 3 4 1: (1234)(2341)(3412)(4123)(1234)(2341): 6, of which 2 repeat an earlier one
    assert repeated_ngram_frac([1, 2, 3, 4, 1, 2, 3, 4, 1]) == 2 / 6
    assert repeated_ngram_frac([5, 6, 7, 8, 9]) == 0.0  # no repeat
    assert repeated_ngram_frac([1, 2, 3, 4]) == 0.0  # one 4-gram: nothing to repeat
    assert repeated_ngram_frac([7, 7, 7], n=1) == 2 / 3


def test_rollout_sums_with_teacher_samples_longer_than_the_students():
    """rollout.teacher_share: the teacher's samples carry no rollout log-probs and may be the step's longest; the
    mismatch is measured on the student's tokens only and the response metrics count the student's samples."""
    import torch

    from uniopd_mm.metrics import rollout_sums, step_metrics
    from uniopd_mm.rollout import RolloutOutput

    ro = RolloutOutput([[1, 2], [3, 4, 5, 6]], [[-1.0, -2.0], []], [0, 0], [False, True], [False, True])
    old = torch.tensor([[-1.5, -2.0, 0.0, 0.0], [-0.1, -0.2, -0.3, -0.4]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    sums = rollout_sums(ro, old, old, mask, mask, torch.ones(2), [None, True], mask)
    m = step_metrics(sums, lambda t: t)
    assert sums["n_mismatch"] == 2 and sums["mismatch"] == 0.5  # |-1 + 1.5| + |-2 + 2|
    assert m["response/truncated_frac"] == 1.0 and m["rollout/teacher_samples"] == 1.0
    # no teacher ran (GRPO, the constant control): no reverse KL, not a 0 (the log ratio there is 0 by construction)
    assert "opd/reverse_kl" in m and "opd/reverse_kl" not in step_metrics(sums, lambda t: t, with_teacher=False)
