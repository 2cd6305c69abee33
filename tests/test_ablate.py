"""The ablation study (uniopd_mm/studies/ablation.py) end to end with tiny budgets: every row runs and the table and curves are written."""

from __future__ import annotations

import json

from uniopd_mm.studies import ablation as ablate
from uniopd_mm.studies.harness import slug as ablate_slug
from uniopd_mm.studies.stats import cell, interval


def test_ablate_smoke(tiny_dir, tmp_path):
    """Tiny budgets: every kind of row (SFT on teacher answers, OPD, a full-vocabulary loss, Uni-OPD,
    multi-teacher routing) runs, stops on its time budget, and lands in the table, JSON and curves."""
    out = tmp_path / "ablate"
    rows = ["sft on teacher answers", "opd", "opd full reverse KL", "uni-opd (mm preset)", "uni-opd with 2 expert teachers"]
    results = ablate.main(["--out", str(out), "--tiny", str(tiny_dir), "--budget", "0.5", "--eval-every", "50",
                           "--teacher-steps", "2", "--student-steps", "2", "--n-train", "24", "--n-test", "6",
                           "--rows", ",".join(rows)])
    assert [r["row"] for r in results] == rows
    for r in results:
        # the budget stopped training (100000 steps were asked for) and the last point is an evaluation
        assert 1 <= r["steps"] < 100 and len(r["curves"]["eval"]) >= 2
        assert r["curves"]["eval"][-1][0] >= 0.5 or r["row"] == "sft on teacher answers"
    assert results[0]["label_seconds"] > 0
    labelled = [json.loads(line) for line in (out / "data" / "train_teacher_answers.jsonl").read_text().splitlines()]
    assert len(labelled) == 24 and all(rec["messages"][-1]["role"] == "assistant" for rec in labelled)
    table = (out / "results.md").read_text()
    assert all(f"| {r} |" in table for r in rows)
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["results"]) == 5 and saved["results"][1]["reverse_kl_end"] is not None
    assert (out / "curves.png").stat().st_size > 1000
    # a second call reads the finished rows back instead of training them again
    stamps = [(out / "runs" / f"{ablate_slug(r)}-s0" / "metrics.jsonl").stat().st_mtime_ns for r in rows]
    again = ablate.main(["--out", str(out), "--tiny", str(tiny_dir), "--budget", "0.5", "--eval-every", "50",
                         "--teacher-steps", "2", "--student-steps", "2", "--n-train", "24", "--n-test", "6",
                         "--rows", ",".join(rows)])
    assert again == json.loads(json.dumps(results))
    assert stamps == [(out / "runs" / f"{ablate_slug(r)}-s0" / "metrics.jsonl").stat().st_mtime_ns for r in rows]


def test_ablate_held_out_settings(tiny_dir, tmp_path):
    """--held-out draws level-1 data whose test questions and scenes never occur in training, and every OPD row
    runs with the log-ratio mask off (the setting the held-out teachers need, docs/results.md)."""
    out = tmp_path / "ablate"
    ablate.main(["--out", str(out), "--tiny", str(tiny_dir), "--budget", "0.5", "--eval-every", "50", "--held-out",
                 "--teacher-steps", "2", "--student-steps", "2", "--n-train", "24", "--n-test", "6", "--rows", "opd",
                 "--set", "train.vision_lr_scale=0.5"])
    recs = {split: [json.loads(line) for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "test")}
    assert {r["meta"]["difficulty"] for r in recs["train"] + recs["test"]} == {1}
    seen = {(r["messages"][0]["content"][-1]["text"], r["text_view"]) for r in recs["train"]}
    assert not any((r["messages"][0]["content"][-1]["text"], r["text_view"]) in seen for r in recs["test"])
    cfg = json.loads((out / "runs" / "opd-s0" / "config.json").read_text())
    assert cfg["algo"]["logratio_threshold"] is None and cfg["train"]["vision_lr_scale"] == 0.5
    assert "log-ratio mask: off" in (out / "results.md").read_text()


def test_interval_hand_computed():
    """95% t-interval of [0.5, 0.7, 0.9]: mean 0.7, sd 0.2, t(2 df) = 4.303, half-width 4.303 * 0.2 / sqrt(3)."""
    m, h = interval([0.5, 0.7, 0.9])
    assert abs(m - 0.7) < 1e-12 and abs(h - 0.496868) < 1e-6
    assert interval([0.4]) == (0.4, 0.0)
    assert cell([0.5, 0.7, 0.9]) == "0.700 ± 0.497" and cell([None]) == "-"
