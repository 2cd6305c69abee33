"""The imperfect-teacher benchmark's quick mode: every row's pipeline runs (one seed, 2 steps, tiny data) and
writes its result; a rerun reads the results back instead of training again. Not its numbers: those come from
the full run (docs/results.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_mode_runs_every_row_and_resumes(tiny_dir, tmp_path):
    from uniopd_mm.studies.blindspot import ROWS, blind_copy

    # the teacher's data: a blue answer and the fact before it read green; other records are untouched
    rec = {"answer": "blue", "meta": {"solution": "circle: blue, so blue"}}
    assert blind_copy(rec) == {"answer": "green", "meta": {"solution": "circle: green, so green"}}
    assert rec["answer"] == "blue" and blind_copy({"answer": "red", "meta": {}})["answer"] == "red"

    cmd = [sys.executable, str(ROOT / "scripts" / "study.py"), "blindspot", "--quick", "--out", str(tmp_path / "bs"),
           "--tiny", str(tiny_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "bs" / "results.json").read_text())
    assert [r["row"] for r in res["results"]] == list(ROWS)
    for r in res["results"]:
        assert 0.0 <= r["acc"] <= 1.0 and 0.0 <= r["blind"] <= 1.0, r
        assert r["steps"] == (0 if r["row"] == "teacher" else 2), r
        assert all(math.isfinite(p[1]) for p in r["curve"]), r
    test = [json.loads(x) for x in (tmp_path / "bs" / "data" / "test.jsonl").read_text().splitlines()]
    assert all((x["meta"].get("slice") == "blind") == (x["answer"] == "blue") for x in test)
    assert (tmp_path / "bs" / "curves.png").stat().st_size > 10_000
    table = (tmp_path / "bs" / "results.md").read_text()
    assert all(f"| {name} |" in table for name in ROWS)
    t0 = time.time()  # finished rows are read back, not trained again
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0 and time.time() - t0 < 60, again.stderr[-2000:]
    assert json.loads((tmp_path / "bs" / "results.json").read_text())["results"] == res["results"]


def test_report_times_half_the_gap_over_the_seeds_that_reach_it(tmp_path):
    """The speed column: the first training second at which the overall accuracy reaches the student's start plus
    half its gap to the teacher (here 0.6 + 0.5 * (0.8 - 0.6) = 0.7), averaged over the seeds that reach it."""
    from uniopd_mm.studies.blindspot import TEACHER, render

    info = {TEACHER: {"accuracy": 0.8, "blind": 0.0}, "student": {"accuracy": 0.6, "blind": 0.5}}
    common = {"steps": 10, "inversion": None, "mixed_groups": None}
    results = [
        {"row": "teacher", "seed": 0, "acc": 0.8, "blind": 0.0, "curve": [], **common},
        # reaches 0.7 at 20 s (0.65 at 10 s does not count)
        {"row": "fast", "seed": 0, "acc": 0.72, "blind": 0.0, "curve": [[0, 0.6, 0.5], [10, 0.65, 0.0], [20, 0.72, 0.0]], **common},
        {"row": "fast", "seed": 1, "acc": 0.7, "blind": 0.0, "curve": [[0, 0.6, 0.5], [14, 0.7, 0.0]], **common},  # 14 s
        {"row": "fast", "seed": 2, "acc": 0.69, "blind": 0.0, "curve": [[0, 0.6, 0.5], [30, 0.69, 0.0]], **common},  # never
        {"row": "slow", "seed": 0, "acc": 0.6, "blind": 0.5, "curve": [[0, 0.6, 0.5], [30, 0.6, 0.5]], **common},
    ]
    lines = render({"info": info, "settings": {"budget": 30}, "results": results, "date": "2026-12-06", "cpu_count": 2})
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[-1] for line in lines if line.startswith("| ")}
    assert rows["fast"] == "17 (2/3 seeds)"  # (20 + 14) / 2
    assert rows["slow"] == "not reached"
    assert rows["teacher"] == "-"


def test_rows_option_splits_on_commas_outside_parentheses():
    from uniopd_mm.studies.blindspot import ROWS
    from uniopd_mm.studies.harness import split_rows

    names = split_rows("opd, uni-opd (text preset, delta 10),uni-opd (mm preset, lr 1e-4)")
    assert names == ["opd", "uni-opd (text preset, delta 10)", "uni-opd (mm preset, lr 1e-4)"]
    assert all(name in ROWS for name in names)
