"""Greedy evaluation's counting: overall, per domain, per slice, rejected prompts, and the sum over ranks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from uniopd_mm.data import DataError, Sample
from uniopd_mm.evaluate import evaluate


def sample(i, answer, slice_name=None, domain="shapes-color"):
    meta = {"slice": slice_name} if slice_name else {}
    return Sample(id=str(i), messages=[{"role": "user", "content": [{"type": "text", "text": f"q{i}"}]}], answer=answer,
                  domain=domain, meta=meta)


class Processor:
    def encode_prompt(self, s):
        if s.id == "bad":
            raise DataError("unreadable")
        return s.id

    def decode(self, response):
        return response


class Rollout:  # answers "red" to every prompt, in the answer format the verifier reads
    def generate(self, prompts, params):
        return SimpleNamespace(responses=["circle: red, so red" for _ in prompts])


def test_accuracy_per_domain_and_per_slice():
    samples = [sample(0, "red"), sample(1, "blue", "blue"), sample(2, "red", "blue"), sample(3, "green"),
               sample("bad", "red", "blue"), sample(5, "red", domain="video-color")]
    got = evaluate(Rollout(), Processor(), samples)
    # right: 0, 2, 5 of 6 records (the unbuildable one counts as wrong); slice "blue": 1 (wrong), 2 (right), bad (wrong)
    assert got["eval/accuracy"] == pytest.approx(3 / 6)
    assert got["eval/accuracy/shapes-color"] == pytest.approx(2 / 5) and got["eval/accuracy/video-color"] == 1.0
    assert got["eval/slice/blue"] == pytest.approx(1 / 3)
    assert got["eval/rejected"] == 1.0


def test_two_ranks_sum_their_counts():
    samples = [sample(i, "red" if i % 3 else "blue", "blue" if i % 2 else None) for i in range(8)]
    shards = [evaluate(Rollout(), Processor(), samples, rank=r, world_size=2, all_reduce=lambda v: v) for r in range(2)]
    whole = evaluate(Rollout(), Processor(), samples)
    # summing the two shards' count vectors is what the all-reduce does; rebuild it from the shards by hand
    vecs = []

    def capture(v):
        vecs.append(v.clone())
        return v

    for r in range(2):
        evaluate(Rollout(), Processor(), samples, rank=r, world_size=2, all_reduce=capture)
    total = vecs[0] + vecs[1]
    got = evaluate(Rollout(), Processor(), samples, rank=0, world_size=2, all_reduce=lambda v: total)
    assert got == pytest.approx(whole)
    assert whole["eval/accuracy"] == pytest.approx(5 / 8)  # 1, 2, 4, 5, 7 are "red"
    assert (shards[0]["eval/accuracy"], shards[1]["eval/accuracy"]) == (pytest.approx(2 / 4), pytest.approx(3 / 4))
