"""A two-process DeepSpeed run (gloo, CPU) in which rank 1 dies inside step 2, or freezes there (alive,
never reaching the next collective): the run exits with an error within a bounded time instead of
hanging, and nothing past the last complete step is written. The frozen case is the one no launcher
can see: rank 0's collective gives up after train.collective_timeout_s."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from conftest import free_port, tiny_config
from faultkit import DRIVER, start, write_config

from uniopd_mm import checkpoint as ckpt
from uniopd_mm.metrics import read_metrics

TIMEOUT_S = 20  # train.collective_timeout_s
BOUND_S = 90  # from the fault to the launcher's exit, beyond the collective timeout


@pytest.mark.parametrize("fault", ["die", "hang_in_step"])
def test_a_dead_or_frozen_rank_ends_the_run_instead_of_hanging(tiny_dir, synth_dir, tmp_path, fault):
    out = tmp_path / "ds"
    cfg = tiny_config(tiny_dir, synth_dir, out, student="qwen3-student", teacher="qwen3-teacher", family="text",
                      overrides=["train.engine=deepspeed", "train.zero_stage=3", "train.steps=4", "train.save_every=1",
                                 "train.eval_every=0", f"train.collective_timeout_s={TIMEOUT_S}"])
    config = write_config(cfg, tmp_path / "ds.yaml")
    log = tmp_path / "ds.log"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
           str(DRIVER), fault, "2", "--config", str(config)]
    proc = start(cmd, log, env={"FAULT_RANK": "1", "FAULT_READY": str(tmp_path / "READY")})
    deadline = time.monotonic() + 400
    died_at = None
    while proc.poll() is None and time.monotonic() < deadline:
        if died_at is None and ckpt.latest_complete(out / "checkpoints") is not None:
            died_at = time.monotonic()  # step 1 is saved; rank 1 dies / freezes early in step 2
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the run hung after rank 1 died:\n{log.read_text()[-4000:]}")
    elapsed = time.monotonic() - died_at
    text = log.read_text()
    assert proc.returncode != 0, text[-4000:]
    assert elapsed < BOUND_S + (TIMEOUT_S if fault == "hang_in_step" else 0), f"took {elapsed:.0f} s to exit"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1]
    assert ckpt.latest_complete(out / "checkpoints").name == "step_000001"
    if fault == "hang_in_step":  # rank 0 gave up on its own: its collective timed out
        assert "rank 0, step 2: lost contact with another process" in text, text[-4000:]
    print(f"rank {fault}: the run exited {elapsed:.1f} s after step 1 was saved (rc {proc.returncode})")
