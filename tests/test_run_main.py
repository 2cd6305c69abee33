"""scripts/run_main.py (`make run`) end to end with tiny budgets: every stage runs, the report has the
promised keys, and a second run reuses the cached stages unless the Uni-OPD settings change."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from uniopd_mm.studies import main_job as run_main


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
    # Uni-OPD samples counting 3 times as often as motion, from per-domain files that together are train.jsonl
    opd_cfg = yaml.safe_load((out / "opd.yaml").read_text())
    assert opd_cfg["data"]["mixture"] == [{"path": str(data / "train_shapes-count.jsonl"), "weight": 3.0},
                                          {"path": str(data / "train_motion.jsonl"), "weight": 1.0}]
    parts = [line for d in ("shapes-count", "motion") for line in (data / f"train_{d}.jsonl").read_text().splitlines()]
    assert sorted(parts) == sorted((data / "train.jsonl").read_text().splitlines())
    assert all(json.loads(line)["domain"] == "motion" for line in (data / "train_motion.jsonl").read_text().splitlines())
    assert opd_cfg["rollout"]["temperature"] == 1.5
    assert (opd_cfg["rollout"]["n"], opd_cfg["train"]["prompts_per_step"]) == (2, 48)
    # the frozen towers' features are kept for every training and test image (train.vision_cache)
    assert opd_cfg["train"]["vision_cache"] >= 4000 + 200
    # nearby students: 20% fewer / more SFT steps (int(2 * 0.8) = 1, int(2 * 1.2) = 2) and seed 1, each trained
    assert set(report["student_cliff"]) == {"1 steps", "2 steps", "2 steps, seed 1"}
    assert (out / "cliff" / "2_steps_seed_1" / "summary.json").exists()
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


def test_domain_weights_parse_and_refuse_bad_pairs():
    assert run_main.parse_domain_weights("shapes-count=3, motion=0.5") == {"shapes-count": 3.0, "motion": 0.5}
    assert run_main.parse_domain_weights("") == {}
    for bad in ("motion", "motion=x", "motion=-1"):
        with pytest.raises(SystemExit, match="domain=weight"):
            run_main.parse_domain_weights(bad)


def test_uniform_sampling_without_domain_weights(tiny_dir, tmp_path):
    out = tmp_path / "main"
    run_main.main(["--out", str(out), "--tiny", str(tiny_dir), "--steps", "1", "--teacher-steps", "1", "--student-steps",
                   "1", "--n-train", "8", "--n-test", "2", "--student-records", "4", "--no-cliff-check",
                   "--domain-weights", "", "--temperature", "1"])
    opd_cfg = yaml.safe_load((out / "opd.yaml").read_text())
    assert opd_cfg["data"]["train_path"] == str(out / "data" / "train.jsonl") and "mixture" not in opd_cfg["data"]
    assert opd_cfg["rollout"]["temperature"] == 1.0
    run_main.main(["--out", str(out), "--tiny", str(tiny_dir), "--steps", "1", "--teacher-steps", "1", "--student-steps",
                   "5", "--n-train", "8", "--n-test", "2", "--student-records", "4", "--cliff-seeds", "1,2",
                   "--domain-weights", "", "--temperature", "1"])  # more nearby students: a seed each
    assert set(json.loads((out / "report.json").read_text())["student_cliff"]) == {
        "4 steps", "6 steps", "5 steps, seed 1", "5 steps, seed 2"}
    with pytest.raises(SystemExit, match="comma-separated list of integers"):
        run_main.main(["--out", str(out), "--cliff-seeds", "1,x"])
    with pytest.raises(SystemExit, match="not among --domains"):
        run_main.main(["--out", str(out), "--tiny", str(tiny_dir), "--domain-weights", "shapes-color=2"])
