"""Teachers and settings: every shipped tiny config runs 2 steps; routing, strong-to-weak stripping and
the cross-tokenizer projection are checked on their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from uniopd_mm.algo.xtok import align_chunks, chunk_reward_logprobs, chunk_totals
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


def test_chunk_rule_hand_computed():
    """RECIPE 7: chunks are the shortest spans both tokenisations cover; every student token of a chunk gets
    log pi_T(chunk) - log pi_old(chunk)."""
    # student "ab" "cde" (ends 2, 5), teacher "a" "b" "cd" "e" (ends 1, 2, 4, 5): shared ends 2 and 5
    s_chunk, t_chunk = align_chunks(torch.tensor([2, 5]), torch.tensor([1, 2, 4, 5]))
    assert s_chunk.tolist() == [0, 1] and t_chunk.tolist() == [0, 0, 1, 1]
    # student "ab" "c" "de" (2, 3, 5), teacher "a" "bcd" "e" (1, 4, 5): only 5 is shared, one chunk
    assert [c.tolist() for c in align_chunks(torch.tensor([2, 3, 5]), torch.tensor([1, 4, 5]))] == [[0, 0, 0], [0, 0, 0]]
    # teacher log-probs -1, -2 (chunk 0) and -0.5, -0.25 (chunk 1): totals -3 and -0.75
    totals = chunk_totals(torch.tensor([-1.0, -2.0, -0.5, -0.25]), t_chunk, 2)
    assert totals.tolist() == [-3.0, -0.75]
    # one row, student log-probs -1.5 ("ab") and -1.0 ("cde"); a second row where "cde" is two tokens of one chunk
    teacher = torch.tensor([[-3.0, -0.75, 0.0], [-3.0, -0.75, -0.75]])
    old = torch.tensor([[-1.5, -1.0, 0.0], [-1.5, -0.5, -0.5]])
    chunks = torch.tensor([[0, 1, -1], [0, 1, 1]])
    out = chunk_reward_logprobs(teacher, old, chunks)
    # rewards: row 0: -3 - (-1.5) = -1.5, -0.75 - (-1.0) = 0.25; row 1: -1.5, and -0.75 - (-1.0) = 0.25 at both
    # tokens of the second chunk; the padded position gets reward 0
    assert torch.allclose(out - old, torch.tensor([[-1.5, 0.25, 0.0], [-1.5, 0.25, 0.25]]))
    # identical tokenizers (one token per chunk): the per-token teacher log-probs come back unchanged
    ident = torch.arange(3).repeat(2, 1)
    assert torch.allclose(chunk_reward_logprobs(teacher, old, ident), teacher)
    # a chunk both models find equally likely gets zero
    assert chunk_reward_logprobs(torch.tensor([[-1.0, -1.0]]), torch.tensor([[-0.4, -0.6]]),
                                 torch.tensor([[0, 0]])).sub(torch.tensor([[-0.4, -0.6]])).abs().max() < 1e-7


def test_student_ends_from_offsets_equal_the_cumulative_decode(in_artifacts):
    from processors import make_processor
    from uniopd_mm.teacher.hf import student_ends

    tok = make_processor("text", "artifacts/tiny/qwen2-student").tokenizer
    ids = tok("4 * 2 = 8, 3 + 8 = 11, so 11 éé", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    text, ends = student_ends(tok, ids)
    prefixes = [len(tok.decode(ids[: i + 1], skip_special_tokens=False)) for i in range(len(ids))]
    assert ends == prefixes and text.endswith("<|im_end|>") and ends[-1] == len(text)


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
    # each student token holds its chunk's total: summed once per chunk, the response's total log-probability
    chunks = res.chunks[0, : len(body)]
    assert chunks.min() == 0 and chunks.max() < len(body) and res.token_mask[0, : len(body)].eq(1).all()
    firsts = [chunks.tolist().index(c) for c in sorted(set(chunks.tolist()))]
    assert res.logprobs[0, firsts].sum().item() == pytest.approx(own.sum().item(), abs=1e-4)
    assert int(chunks.max()) + 1 < len(xids)  # the tokenisations differ: some chunk holds several teacher tokens
