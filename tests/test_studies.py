"""The study harness: stored results re-render byte for byte as the reports the pre-harness scripts wrote, and
the grid runner resumes from what is on disk.

tests/data/studies/<study>/results.md was written by scripts/ablate.py and scripts/blindspot.py as they were at
9091856 (tests/data/studies/make_fixtures.py, run at that commit), from the results.json beside it (the date and
core count they read from the clock then are stored in it now)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniopd_mm.studies import ablation, blindspot, harness, study
from uniopd_mm.studies.stats import reach_cell, time_to

DATA = Path(__file__).resolve().parent / "data" / "studies"


@pytest.mark.parametrize("module", [ablation, blindspot], ids=["ablation", "blindspot"])
def test_stored_results_render_byte_for_byte(module):
    name = module.__name__.rsplit(".", 1)[1]
    payload = json.loads((DATA / name / "results.json").read_text())
    assert "\n".join(module.render(payload)) + "\n" == (DATA / name / "results.md").read_text()


def test_report_writes_table_payload_and_figure(tmp_path):
    payload = json.loads((DATA / "blindspot" / "results.json").read_text())
    harness.report(tmp_path, payload, blindspot.render, blindspot.plot)
    assert (tmp_path / "results.md").read_text() == (DATA / "blindspot" / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text()) == payload
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_grid_runs_each_job_once_and_resumes(tmp_path):
    calls, reports = [], []

    def run_one(name, seed, run_dir):
        calls.append((name, seed))
        return {"row": name, "seed": seed, "acc": 0.5 + seed / 10}

    jobs = [("opd", 0), ("uni-opd (mm preset)", 0), ("opd", 1)]
    first = harness.run_grid(tmp_path, jobs, run_one, lambda rs: reports.append(len(rs)))
    assert calls == jobs and reports == [1, 2, 3]
    assert (tmp_path / "runs" / "uni_opd__mm_preset-s0" / "result.json").exists()
    again = harness.run_grid(tmp_path, jobs + [("opd", 2)], run_one)
    assert calls == jobs + [("opd", 2)] and again[:3] == first


def test_grid_report_only_reads_the_runs_on_disk_and_runs_nothing(tmp_path, capsys):
    def run_one(name, seed, run_dir):
        return {"row": name, "seed": seed, "acc": 0.25}

    harness.run_grid(tmp_path, [("opd", 0)], run_one)

    def must_not_run(name, seed, run_dir):
        raise AssertionError(f"ran {name} seed {seed}")

    reports = []
    got = harness.run_grid(tmp_path, [("opd", 0), ("opd", 1), ("grpo", 0)], must_not_run, reports.append,
                           report_only=True)
    assert got == [{"row": "opd", "seed": 0, "acc": 0.25}] and reports == [got]
    assert not (tmp_path / "runs" / "opd-s1").exists()
    assert "2 of 3 runs not on disk, left out: opd (seed 1), grpo (seed 0)" in capsys.readouterr().out


def test_time_to_target_and_its_cell():
    curve = [(0.0, 0.2), (10.0, 0.49), (20.0, 0.5), (30.0, 0.9)]
    assert time_to(curve, 0.5) == 20.0 and time_to(curve, 0.95) is None
    assert reach_cell([20.0, 40.0]) == "30" and reach_cell([20.0, None]) == "20 (1/2 seeds)"
    assert reach_cell([None]) == "not reached" and reach_cell([]) == "-"


def test_unknown_study_is_refused_by_name():
    with pytest.raises(SystemExit, match="unknown study 'ablate'; choose from main, ablation, blindspot"):
        study("ablate")
