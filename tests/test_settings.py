"""Teachers and settings: every shipped tiny config runs 2 steps; routing, strong-to-weak stripping and
the cross-tokenizer projection are checked on their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from uniopd_mm.algo.xtok import project_logprobs
from uniopd_mm.config import load_config
from uniopd_mm.data import load_jsonl
from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "scripts" / "configs"
SETTINGS = ["tiny_qwen2_vl", "tiny_qwen2_5_vl", "tiny_qwen3_vl", "tiny_text", "tiny_multi_teacher", "tiny_strong_to_weak",
            "tiny_cross_modal", "tiny_translation_text_teacher", "tiny_translation_vl_teacher", "tiny_cross_tokenizer",
            "tiny_uniopd_mm"]


@pytest.fixture()
def in_artifacts(tmp_path, tiny_dir, synth_dir, monkeypatch):
    """A working directory whose artifacts/ are the session's tiny models and synthetic data."""
    (tmp_path / "artifacts").mkdir()
    os.symlink(tiny_dir, tmp_path / "artifacts" / "tiny")
    os.symlink(synth_dir, tmp_path / "artifacts" / "synthetic")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", SETTINGS)
def test_shipped_setting_runs_two_steps(in_artifacts, name):
    cfg = load_config(CONFIGS / f"{name}.yaml", [
        "output_dir=run", "train.steps=2", "train.prompts_per_step=6", "train.micro_batch_size=12", "rollout.n=2",
        "rollout.max_new_tokens=10", "train.eval_every=0", "logging.progress=false", "logging.tensorboard=false"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.engine.module.state_dict().items()}
    trainer.train()
    rows = read_metrics(Path("run") / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["teacher/failed"] == 0.0 and r["train/loss"] is not None for r in rows), rows
    assert all(r["opd/counted_tokens"] > 0 for r in rows)
    after = trainer.engine.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if len(cfg.teacher_registry) > 1:
        routed = sum(r.get(f"teacher/{t}/rollouts", 0.0) for r in rows for t in cfg.teacher_registry)
        assert routed == sum(2 * 6 for _ in rows)  # every rollout scored by exactly one teacher


def test_routing_follows_the_mixture(in_artifacts):
    cfg = load_config(CONFIGS / "tiny_cross_modal.yaml", ["output_dir=run", "logging.progress=false"])
    trainer = Trainer(cfg)
    routes = {trainer.teacher_of(s) for s in trainer.samples if s.modality == "text"}
    assert routes == {"llm"}
    assert {trainer.teacher_of(s) for s in trainer.samples if s.modality == "image"} == {"mllm"}


def test_strong_to_weak_strips_the_prefix_and_masks_it(in_artifacts):
    cfg = load_config(CONFIGS / "tiny_strong_to_weak.yaml", ["output_dir=run", "logging.progress=false"])
    trainer = Trainer(cfg)
    teacher = trainer.teachers["default"]
    sample = next(s for s in trainer.samples if s.modality == "text")
    tok = trainer.student_proc.tokenizer
    body = tok("7 + 6 = 13, so 13", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    prefix = tok("<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"]
    with_prefix = teacher.score([sample], [prefix + body])
    plain = teacher.score([sample], [body])
    assert not with_prefix.failed.any()
    assert with_prefix.token_mask[0, : len(prefix)].sum() == 0 and with_prefix.token_mask[0, len(prefix):].sum() == len(body)
    # the body is scored exactly as without the prefix: after the teacher's own (think) template
    assert torch.allclose(with_prefix.logprobs[0, len(prefix):], plain.logprobs[0, : len(body)], atol=1e-5)
    prompt = teacher.encode(sample)
    assert prompt.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_projection_rule_hand_computed():
    # student tokens "ab" "c" "de" -> spans (0,2) (2,3) (3,5); teacher tokens "a" "bcd" "e" end at 1, 4, 5
    lp, mask = project_logprobs(torch.tensor([1, 4, 5]), torch.tensor([-1.0, -2.0, -0.5]),
                                torch.tensor([[0, 2], [2, 3], [3, 5]]))
    # "a" ends in "ab"; "bcd" ends in "de"; "e" ends in "de" -> [-1, 0, -2.5]; "c" gets no end -> masked
    assert lp.tolist() == [-1.0, 0.0, -2.5] and mask.tolist() == [1.0, 0.0, 1.0]
    assert lp.sum() == pytest.approx(-3.5)


def test_cross_tokenizer_identity_and_total_logprob(in_artifacts):
    from processors import make_processor
    from uniopd_mm.models import load_model
    from uniopd_mm.config import TeacherConfig
    from uniopd_mm.teacher.hf import HFTeacher

    tiny = Path("artifacts/tiny")
    student = make_processor("text", str(tiny / "qwen2-student"))
    sample = next(s for s in load_jsonl("artifacts/synthetic/train.jsonl") if s.modality == "text")
    body = student.tokenizer("4 * 2 = 8, 3 + 8 = 11, so 11", add_special_tokens=False)["input_ids"] + student.eos_token_ids[:1]
    same_cfg = TeacherConfig(path=str(tiny / "qwen2-teacher"), family="text")
    model = load_model(same_cfg, frozen=True)
    shared = HFTeacher(model, make_processor("text", str(tiny / "qwen2-teacher")), student_tokenizer=student.tokenizer)
    forced = HFTeacher(model, make_processor("text", str(tiny / "qwen2-teacher")), student_tokenizer=student.tokenizer,
                       shared_vocab=False)
    a, b = shared.score([sample], [body]), forced.score([sample], [body])
    assert shared.shared_vocab and not forced.shared_vocab
    # identical tokenizers: the projection is the identity
    assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5) and torch.equal(b.token_mask[0], torch.ones(len(body)))
    # a teacher with another vocabulary: it runs, and the response's total log-probability is preserved
    xcfg = TeacherConfig(path=str(tiny / "qwen2-xtok"), family="text")
    xproc = make_processor("text", str(tiny / "qwen2-xtok"))
    xt = HFTeacher(load_model(xcfg, frozen=True), xproc, student_tokenizer=student.tokenizer)
    assert not xt.shared_vocab
    res = xt.score([sample], [body])
    assert not res.failed.any()
    text = student.tokenizer.decode(body, skip_special_tokens=False)
    xids = xproc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(xids) != len(body)
    from uniopd_mm.models import score_response_tokens

    own = score_response_tokens(xt.model, xproc.training_batch([xproc.encode_prompt(sample)], [xids]), xt.suppressed)["logprobs"]
    assert res.logprobs[0].sum().item() == pytest.approx(own.sum().item(), abs=1e-4)
