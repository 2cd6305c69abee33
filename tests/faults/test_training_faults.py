"""Training faults: a NaN or inf loss skips its step (weights untouched, the step logged as skipped)
and the run goes on; K skipped steps in a row stop the run with a clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer


def test_a_nan_and_an_inf_loss_are_skipped_and_the_run_goes_on(tiny_dir, synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "blips"
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, out, overrides=["train.steps=4", "train.max_skipped_in_a_row=3"]))
    original, weights = trainer.loss, {}

    def loss(model, *args):
        value, metrics = original(model, *args)
        step = trainer.step + 1
        if step not in weights:
            weights[step] = {k: v.detach().clone() for k, v in trainer.engine.module.state_dict().items()}
        bad = {2: float("nan"), 3: float("inf")}.get(step)
        return (value * bad if bad is not None else value), metrics

    monkeypatch.setattr(trainer, "loss", loss)
    trainer.train()
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["train/skipped"] for r in rows] == [0.0, 1.0, 1.0, 0.0]
    # steps 2 and 3 left the weights as they found them; steps 1 and 4 changed them
    assert all(torch.equal(weights[2][k], weights[3][k]) and torch.equal(weights[3][k], weights[4][k]) for k in weights[2])
    after = trainer.engine.module.state_dict()
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    assert any(not torch.equal(weights[4][k], after[k]) for k in after)


def test_consecutive_nonfinite_losses_stop_the_run(tiny_dir, synth_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "nan", overrides=["train.steps=10", "train.max_skipped_in_a_row=3"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.engine.module.state_dict().items()}

    def nan_loss(model, prompts, responses, rows, targets, normalizer):
        return torch.tensor(float("nan"), requires_grad=True), {}

    monkeypatch.setattr(trainer, "loss", nan_loss)
    with pytest.raises(RuntimeError, match=r"step 3: 3 steps in a row were skipped"):
        trainer.train()
    rows = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert [r["train/skipped"] for r in rows] == [1.0, 1.0, 1.0]  # each skipped step is logged
    assert all(torch.equal(before[k], v) for k, v in trainer.engine.module.state_dict().items())
