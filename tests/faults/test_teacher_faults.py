"""Teacher faults inside a training run: NaN / inf log-probs, a bad record (one prompt the teacher cannot
take, one row the model refuses) and a served teacher that times out. The rollouts concerned are masked out
of the loss, counted in ``teacher/failed`` and written to teacher_failures.jsonl; the run goes on; a teacher
failing every rollout for K steps in a row stops it with a clear error. A teacher that runs out of memory, or
raises a programming error, stops the run: the first as the teacher stage's out-of-memory error."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from fake_openai import FakeServer

from uniopd_mm.data import DataError
from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer
from uniopd_mm.training.failures import StageOutOfMemory


def spy_loss_masks(monkeypatch, trainer) -> list[torch.Tensor]:
    """Records the loss mask of each step as it leaves calibration."""
    masks, original = [], trainer.calibrate

    def calibrate(*args, **kwargs):
        out = original(*args, **kwargs)
        masks.append(out[1].clone())
        return out

    monkeypatch.setattr(trainer, "calibrate", calibrate)
    return masks


def failures(out) -> list[dict]:
    path = out / "teacher_failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_nan_inf_and_a_crashing_prompt_are_masked_and_counted(tiny_dir, synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "local"
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, out, overrides=["train.steps=1"]))
    teacher = next(iter(trainer.teachers.values()))
    masks = spy_loss_masks(monkeypatch, trainer)
    original_score, original_encode = teacher.score, teacher.encode
    seen = {}

    def faulty_score(samples, responses, **kw):
        seen["ids"] = [s.id for s in samples]
        crash = samples[-1].id  # the teacher raises on this prompt (both of its rollouts)

        def encode(sample):
            if sample.id == crash:
                raise DataError("teacher cannot take this prompt")
            return original_encode(sample)

        monkeypatch.setattr(teacher, "encode", encode)
        sc = original_score(samples, responses, **kw)
        sc.logprobs[0, 0] = float("nan")
        sc.logprobs[1, 0] = float("inf")
        return sc

    monkeypatch.setattr(teacher, "score", faulty_score)
    trainer.train()

    ids = seen["ids"]
    crashed = [i for i, x in enumerate(ids) if x == ids[-1]]
    bad_rows = sorted({0, 1, *crashed})
    row = read_metrics(out / "metrics.jsonl")[-1]
    assert row["teacher/failed"] == len(bad_rows) and row["train/grad_norm"] is not None
    mask = masks[0]
    assert all(mask[i].sum() == 0 for i in bad_rows)
    assert all(mask[i].sum() > 0 for i in range(len(ids)) if i not in bad_rows)
    reasons = sorted(f["reason"] for f in failures(out))
    assert reasons == sorted(["non-finite teacher log-prob"] * len({0, 1} - set(crashed))
                             + [f"DataError: {DataError('teacher cannot take this prompt')}"] * len(crashed))


def test_a_row_the_teacher_model_refuses_fails_that_row_only(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """The model raises ValueError (as Qwen-VL does for image features that do not match the placeholders) when
    one record is in the micro-batch: the micro-batch is scored again row by row and only that record's rows fail."""
    out = tmp_path / "refused"
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, out, overrides=["train.steps=1"]))
    teacher = next(iter(trainer.teachers.values()))
    masks = spy_loss_masks(monkeypatch, trainer)
    original_batch, seen = teacher.processor.training_batch, {}

    def training_batch(prompts, responses):
        seen.setdefault("bad", prompts[-1].sample_id)
        if any(p.sample_id == seen["bad"] for p in prompts):
            raise ValueError("Image features and image tokens do not match")
        return original_batch(prompts, responses)

    monkeypatch.setattr(teacher.processor, "training_batch", training_batch)
    trainer.train()
    ids = trainer.seen_ids[0]
    bad_rows = [i for i, s in enumerate(r for r in ids for _ in range(2)) if s == seen["bad"]]
    row = read_metrics(out / "metrics.jsonl")[-1]
    assert row["teacher/failed"] == len(bad_rows) == 2
    assert all(masks[0][i].sum() == 0 for i in bad_rows)
    assert all(masks[0][i].sum() > 0 for i in range(2 * len(ids)) if i not in bad_rows)
    assert {f["reason"] for f in failures(out)} == {"ValueError: Image features and image tokens do not match"}


def test_teacher_out_of_memory_stops_the_run_with_the_teacher_stage_advice(tiny_dir, synth_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "oom", overrides=["train.steps=2"]))
    teacher = next(iter(trainer.teachers.values()))

    def forward(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(teacher.model.model, "forward", forward)
    with pytest.raises(StageOutOfMemory, match=r"rank 0, step 1: CUDA out of memory in the teacher stage\. Lower "
                                               r"teacher\.batch_size"):
        trainer.train()
    assert not (tmp_path / "oom" / "teacher_failures.jsonl").exists()


def test_a_programming_error_in_the_teacher_is_not_masked(tiny_dir, synth_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "bug", overrides=["train.steps=2"]))
    teacher = next(iter(trainer.teachers.values()))

    def forward(*args, **kwargs):
        raise TypeError("forward() got an unexpected keyword argument 'cache'")

    monkeypatch.setattr(teacher.model.model, "forward", forward)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        trainer.train()
    assert not (tmp_path / "bug" / "teacher_failures.jsonl").exists()


def test_served_teacher_timeout_and_nan_mask_their_rollouts(tiny_dir, synth_dir, tmp_path):
    server = FakeServer(["slow", "nan"], slow_s=2.0)
    out = tmp_path / "served"
    try:
        trainer = Trainer(tiny_config(
            tiny_dir, synth_dir, out, student="qwen3-student", teacher="qwen3-teacher", family="text",
            overrides=["train.steps=1", "train.preflight=false", "train.micro_batch_size=4", "teacher.backend=served",
                       f"teacher.url={server.url}",
                       "teacher.served_model_name=m", "teacher.timeout=0.5", "teacher.retries=0"]))
        trainer.train()
    finally:
        server.close()
    row = read_metrics(out / "metrics.jsonl")[-1]
    # 12 rollouts in 3 requests of 4: the first timed out (4 masked), the second had one NaN prompt
    assert len(server.calls) == 3 and row["teacher/failed"] == 5.0 and row["train/grad_norm"] is not None
    reasons = [f["reason"] for f in failures(out)]
    assert sum("failed after 1 tries" in r and "Timeout" in r for r in reasons) == 4
    assert sum("non-finite log-prob" in r for r in reasons) == 1


def test_every_rollout_failing_k_steps_in_a_row_stops_the_run(tiny_dir, synth_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "tf", overrides=[
        "train.steps=10", "train.max_teacher_failures_in_a_row=2"])
    trainer = Trainer(cfg)
    teacher = next(iter(trainer.teachers.values()))

    def refuse(sample):
        raise DataError("the teacher takes no prompt")

    monkeypatch.setattr(teacher, "encode", refuse)  # every rollout of every step fails scoring
    with pytest.raises(RuntimeError, match=r"teacher scoring failed for every rollout of 2 steps in a row"):
        trainer.train()
    rows = read_metrics(tmp_path / "tf" / "metrics.jsonl")
    assert len(rows) == 2 and all(r["teacher/failed_frac"] == 1.0 and r["opd/counted_tokens"] == 0 for r in rows)
