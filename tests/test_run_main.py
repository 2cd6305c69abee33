"""scripts/run_main.py (`make run`) end to end with tiny budgets: every stage runs, the report has the
promised keys, and a second run reuses the cached stages unless the Uni-OPD settings change."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import run_main  # noqa: E402


def test_run_main_small(tiny_dir, tmp_path, capsys):
    out = tmp_path / "main"
    args = ["--out", str(out), "--tiny", str(tiny_dir), "--steps", "2", "--teacher-steps", "2",
            "--student-steps", "2", "--n-train", "16", "--n-test", "4"]
    report = run_main.main(args)
    for key in ("teacher_acc", "student_acc_before", "student_acc_after", "gap_closed", "wall_seconds"):
        assert key in report
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
