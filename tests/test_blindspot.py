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
    sys.path.insert(0, str(ROOT / "scripts"))
    from blindspot import ROWS, blind_copy

    # the teacher's data: a blue answer and the fact before it read green; other records are untouched
    rec = {"answer": "blue", "meta": {"solution": "circle: blue, so blue"}}
    assert blind_copy(rec) == {"answer": "green", "meta": {"solution": "circle: green, so green"}}
    assert rec["answer"] == "blue" and blind_copy({"answer": "red", "meta": {}})["answer"] == "red"

    cmd = [sys.executable, str(ROOT / "scripts" / "blindspot.py"), "--quick", "--out", str(tmp_path / "bs"),
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
