"""Step metrics computed from the responses themselves, with hand-counted values."""

from __future__ import annotations

from uniopd_mm.metrics import repeated_ngram_frac


def test_repeated_ngram_frac_counts_repeats_of_earlier_ngrams():
    # 4-grams of 1 2 3 4 1 2 3 4 1: (1234)(2341)(3412)(4123)(1234)(2341): 6, of which 2 repeat an earlier one
    assert repeated_ngram_frac([1, 2, 3, 4, 1, 2, 3, 4, 1]) == 2 / 6
    assert repeated_ngram_frac([5, 6, 7, 8, 9]) == 0.0  # no repeat
    assert repeated_ngram_frac([1, 2, 3, 4]) == 0.0  # one 4-gram: nothing to repeat
    assert repeated_ngram_frac([7, 7, 7], n=1) == 2 / 3
