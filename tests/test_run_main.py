"""scripts/run_main.py (`make run`) end to end with tiny budgets: every stage runs, the report has the
promised keys, and a second run reuses the cached stages unless the Uni-OPD settings change."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import run_main  # noqa: E402


def test_run_main_small(tiny_dir, tmp_path, capsys):
    out = tmp_path / "main"
    args = ["--out", str(out), "--tiny", str(tiny_dir), "--steps", "2", "--teacher-steps", "2",
            "--student-steps", "2", "--n-train", "16", "--n-test", "4", "--student-records", "5"]
    report = run_main.main(args)
    for key in ("teacher_acc", "student_acc_before", "student_acc_after", "gap_closed", "wall_seconds"):
        assert key in report
    # the default job is held out: counting and motion at difficulty 1, no test question+scene seen in training
    data = out / "data"
    train, test = ([json.loads(line) for line in open(data / f"{split}.jsonl")] for split in ("train", "test"))
    assert {r["domain"] for r in train + test} == {"shapes-count", "motion"}
    assert {r["meta"]["difficulty"] for r in train + test} == {1}
    seen = {(r["messages"][0]["content"][-1]["text"], r["text_view"]) for r in train}
    assert not any((r["messages"][0]["content"][-1]["text"], r["text_view"]) in seen for r in test)
    # the weak student is fine-tuned on the first 5 training records only; Uni-OPD prompts from all of them
    assert (data / "train_first5.jsonl").read_text().splitlines() == (data / "train.jsonl").read_text().splitlines()[:5]
    assert report["data"]["student_sft_records"] == "train_first5.jsonl"
    assert yaml.safe_load((out / "opd.yaml").read_text())["data"]["train_path"] == str(data / "train.jsonl")
    assert json.loads((out / "report.json").read_text())["opd_steps"] == 2
    assert "| student after Uni-OPD |" in (out / "report.md").read_text()
    assert (out / "curves.png").stat().st_size > 1000
    ckpt = out / "opd" / "checkpoints" / "step_000002"
    stamp = (ckpt / "COMPLETE").stat().st_mtime_ns
    capsys.readouterr()
    run_main.main(args)  # cached: the OPD checkpoint is not rewritten
    assert (ckpt / "COMPLETE").stat().st_mtime_ns == stamp
    run_main.main(args + ["algo.preset=opd"])  # a changed setting runs Uni-OPD again
    assert "settings changed" in capsys.readouterr().out
    assert (ckpt / "COMPLETE").stat().st_mtime_ns != stamp
    # a changed data or SFT setting rebuilds every stage, not just the one it names
    student_stamp = (out / "student" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    run_main.main(args[:-1] + ["6"])  # --student-records 6
    assert "rebuilding every stage" in capsys.readouterr().out
    assert not (data / "train_first5.jsonl").exists()
    assert len((data / "train_first6.jsonl").read_text().splitlines()) == 6
    assert (out / "student" / "summary.json").stat().st_mtime_ns != student_stamp
