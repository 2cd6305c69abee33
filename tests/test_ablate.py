"""scripts/ablate.py end to end with tiny budgets: every row runs and the table and curves are written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import ablate  # noqa: E402


def test_ablate_smoke(tiny_dir, tmp_path):
    out = tmp_path / "ablate"
    results = ablate.main(["--out", str(out), "--tiny", str(tiny_dir), "--steps", "2", "--teacher-steps", "3",
                           "--student-steps", "2", "--rows", "opd,+online balance,uni-opd (mm preset)"])
    assert [r["row"] for r in results] == ["opd", "+online balance", "uni-opd (mm preset)"]
    table = (out / "results.md").read_text()
    assert "| opd |" in table and "| uni-opd (mm preset) |" in table
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["results"]) == 3 and all(r["reverse_kl_end"] == r["reverse_kl_end"] for r in saved["results"])
    assert (out / "curves.png").stat().st_size > 1000
