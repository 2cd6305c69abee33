"""Kills: `kill -9` of a training process inside a step, while a checkpoint is written, and while an
old one is deleted; each time the run resumes from its last complete checkpoint, a half-written or
half-deleted one is never loaded, and the prompt ids seen end to end equal an uninterrupted run's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from faultkit import kill9_when_ready, start, train_cmd, write_config

from uniopd_mm import checkpoint as ckpt
from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer

OVERRIDES = ["train.steps=6", "train.save_every=2", "train.keep_last=1", "train.eval_every=0"]


def _weights(hf_dir):
    from safetensors.torch import load_file

    return load_file(str(hf_dir / "model.safetensors"))


@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_kill9_in_a_step_in_a_save_and_in_a_prune_then_resume(tiny_dir, synth_dir, tmp_path, engine):
    overrides = [*OVERRIDES, f"train.engine={engine}", "train.zero_stage=2"]
    reference = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "ref", overrides=overrides))
    reference.train()

    out = tmp_path / "run"
    config = write_config(tiny_config(tiny_dir, synth_dir, out, overrides=overrides), tmp_path / "run.yaml")
    root, log, ready = out / "checkpoints", tmp_path / "run.log", tmp_path / "READY"
    env = {"FAULT_READY": str(ready)}

    # 1. killed inside step 3: the checkpoint of step 2 is the last complete one
    kill9_when_ready(start(train_cmd(config, fault="hang_in_step", step=3), log, env), ready, log)
    assert ckpt.latest_complete(root).name == "step_000002"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]

    # 2. resumed, then killed while the checkpoint of step 4 is on disk without its COMPLETE marker
    kill9_when_ready(start(train_cmd(config, fault="hang_in_save", step=4), log, env), ready, log)
    half = root / ".tmp-step_000004"
    assert (half / "hf" / "model.safetensors").exists() and any((half / "engine").iterdir())
    assert not (half / ckpt.COMPLETE).exists()
    assert ckpt.latest_complete(root).name == "step_000002"  # the half-written one is never picked

    # 3. resumed, then killed after step 4 was saved, while step 2 (keep_last=1) is being deleted
    kill9_when_ready(start(train_cmd(config, fault="hang_in_prune", step=4), log, env), ready, log)
    assert (root / ".old-step_000002").exists() and not (root / "step_000002").exists()
    assert ckpt.latest_complete(root).name == "step_000004"

    # 4. resumed to the end
    proc = start(train_cmd(config), log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert text.count("resumed from") == 3 and "step_000004 at step 4" in text

    final = root / "step_000006"
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["seen_ids"] == reference.seen_ids and len(state["seen_ids"]) == 6
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in root.iterdir()) == ["step_000006"]  # stale .tmp-/.old- directories cleaned
    ours, ref = _weights(final / "hf"), _weights(tmp_path / "ref" / "checkpoints" / "step_000006" / "hf")
    assert all(torch.allclose(ours[k], ref[k], atol=1e-6) for k in ref)


def test_kill9_during_sft_then_resume(tiny_dir, synth_dir, tmp_path):
    """scripts/sft.py killed at some point after its step-2 checkpoint resumes from it and ends with
    the weights of an uninterrupted run."""
    import os
    import signal
    import time

    from faultkit import ROOT, start

    from uniopd_mm.sft import run_sft

    overrides = ["train.steps=12", "train.save_every=2", "train.engine=torch", "train.prompts_per_step=8",
                 "train.micro_batch_size=8", "train.eval_every=0", "sft.target=meta.solution"]
    reference = run_sft(tiny_config(tiny_dir, synth_dir, tmp_path / "ref", overrides=overrides))
    out = tmp_path / "sft"
    config = write_config(tiny_config(tiny_dir, synth_dir, out, overrides=overrides), tmp_path / "sft.yaml")
    cmd = [sys.executable, str(ROOT / "scripts" / "sft.py"), "--config", str(config)]
    log = tmp_path / "sft.log"
    proc = start(cmd, log)
    deadline = time.monotonic() + 300
    while ckpt.latest_complete(out / "checkpoints") is None:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "final").exists()
    proc = start(cmd, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "resumed from" in log.read_text()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 13))
    ours, ref = _weights(out / "final"), _weights(Path(reference["final"]))
    assert all(torch.allclose(ours[k], ref[k], atol=1e-6) for k in ref)
