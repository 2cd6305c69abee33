"""The benchmark scripts run and report (their numbers are in docs/results.md; no timing is asserted here)."""

from __future__ import annotations

import json

import pytest
import torch

from uniopd_mm.bench import floor as bench_floor
from uniopd_mm.bench import gpu as bench_gpu
from uniopd_mm.bench import step as bench_step


def test_bench_step_times_our_trainer_by_stage(tiny_dir, tmp_path):
    report = bench_step.main(["--out", str(tmp_path / "bs"), "--tiny", str(tiny_dir), "--trainers", "uniopd_mm",
                              "--steps", "2", "--warmup", "1", "--skip-memory", "--max-new-tokens", "8",
                              "--prompts", "2", "--n", "2", "--rounds", "2"])
    ours = report["results"][0]
    # two interleaved rounds of two timed steps; the warm-up step only before the first
    assert ours["trainer"] == "uniopd_mm" and ours["steps"] == 4 and len(ours["round_step_s"]) == 2
    assert 0 < ours["tokens_per_step"] <= 2 * 2 * 8 and ours["tokens_per_s"] > 0
    assert {"rollout", "teacher", "update"} <= set(ours["stages"])
    assert "| uniopd_mm |" in (tmp_path / "bs" / "report.md").read_text()


@pytest.mark.parametrize("engine", [["--engine", "torch"], ["--engine", "deepspeed", "--zero-stage", "3"]])
def test_bench_floor_runs_each_floor_on_our_work(tiny_dir, tmp_path, engine):
    """The floor rollout draws the tokens ours drew (same weights, same random state), and every stage with a
    floor gets both times."""
    report = bench_floor.main(["--out", str(tmp_path / "bf"), "--tiny", str(tiny_dir), "--steps", "2", "--warmup", "1",
                               "--prompts", "2", "--n", "2", "--max-new-tokens", "8", *engine])
    assert report["same_tokens"] == [True, True]
    assert set(report["floor_s"]) == {"rollout", "old_logprobs", "teacher", "update"}
    assert all(report["ours_s"][k] > 0 and report["floor_s"][k] > 0 for k in report["floor_s"])
    assert "| whole step |" in (tmp_path / "bf" / "report.md").read_text()


def test_bench_gpu_pipeline_at_tiny_size_on_cpu(tiny_dir, tmp_path):
    report = bench_gpu.main(["--out", str(tmp_path / "bg"), "--tiny", str(tiny_dir), "--shape", "tiny", "--device", "cpu",
                             "--steps", "2", "--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--zero-stage", "2"])
    assert report["tokens_per_s"] > 0 and {"time/rollout", "time/teacher", "time/update"} <= set(report["stages_s"])
    assert json.loads((tmp_path / "bg" / "report.json").read_text())["steps_timed"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_bench_gpu_refuses_real_size_without_cuda(tmp_path):
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench_gpu.main(["--out", str(tmp_path / "x")])


def test_bench_shared_prompts_at_tiny_size(tiny_dir, tmp_path):
    from uniopd_mm.bench import shared_prompts as bench_shared_prompts

    results = bench_shared_prompts.main(["--out", str(tmp_path / "sp"), "--tiny", str(tiny_dir), "--prompts", "2",
                                         "--n", "2", "--reps", "1"])
    assert [r["pair"] for r in results] == ["text", "qwen2_vl"]
    for r in results:
        assert r["batch"][0] == 4  # 2 prompts x 2 samples
        for what in ("student forward + backward", "teacher scoring"):
            assert r[what]["full_s"] > 0 and r[what]["shared_s"] > 0
    assert "| qwen2_vl |" in (tmp_path / "sp" / "report.md").read_text()
