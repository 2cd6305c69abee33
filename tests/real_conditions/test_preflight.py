"""Checks before step 1 (uniopd_mm/preflight.py): a teacher that does not see the images, a teacher whose chat
template ends a turn with another token, a teacher whose tokens do not line up: the run stops before step 1 with
a message naming the teacher; a healthy pair passes and says what it checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import tiny_config

from uniopd_mm.preflight import PreflightError
from uniopd_mm.trainer import Trainer


def test_a_healthy_vision_teacher_passes_and_moves_with_the_pixels(tiny_dir, synth_dir, tmp_path, capsys):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path, overrides=["logging.progress=true"])
    Trainer(cfg)
    out = capsys.readouterr().out
    assert "teacher default: sees the images (log-probs move by up to" in out
    assert "ends the teacher's turns too" in out and "scores all" in out


def test_a_blind_vision_teacher_stops_the_run(tiny_dir, synth_dir, tmp_path):
    """The teacher's vision weights are zero (as when they fail to load): its image features are the same for
    every image, so the gray images change nothing."""
    blind = tmp_path / "blind-teacher"
    shutil.copytree(tiny_dir / "qwen2_vl-teacher", blind)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(blind)
    with torch.no_grad():
        for p in model.model.visual.parameters():
            p.zero_()
    model.save_pretrained(blind)
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", overrides=[f"teacher.path={blind}"])
    with pytest.raises(PreflightError, match=r"teacher default gives the same log-probs .* it does not see the images"):
        Trainer(cfg)


def test_another_end_of_turn_with_a_shared_vocabulary_stops_the_run(tiny_dir, synth_dir, tmp_path):
    """The teacher's template closes assistant turns with <|endoftext|> (same vocabulary): the student's <|im_end|>
    stop would be an unexpected token to it."""
    other = tmp_path / "eot-teacher"
    shutil.copytree(tiny_dir / "qwen3-teacher", other)
    tok_cfg = json.loads((other / "tokenizer_config.json").read_text())
    for name in ("chat_template.jinja",):
        path = other / name
        if path.exists():
            path.write_text(path.read_text().replace("<|im_end|>", "<|endoftext|>"))
    if "chat_template" in tok_cfg:
        tok_cfg["chat_template"] = tok_cfg["chat_template"].replace("<|im_end|>", "<|endoftext|>")
    tok_cfg["eos_token"] = "<|endoftext|>"
    (other / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (other / "generation_config.json").unlink()
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", student="qwen3-student", family="text",
                      overrides=[f"teacher.path={other}"])
    with pytest.raises(PreflightError, match=r"the student ends a response with '<\|im_end\|>' .* which does not end "
                                             r"one for the teacher"):
        Trainer(cfg)


def test_tokens_that_do_not_line_up_stop_the_run(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """A teacher that scores one token fewer than the student sampled (as a server that re-tokenises the text may):
    the probe response fails to score and the run stops naming the teacher and the record."""
    from uniopd_mm import preflight

    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path, student="qwen3-student", teacher="qwen3-teacher",
                                  family="text", overrides=["train.preflight=false"]))
    teacher = trainer.teachers["default"]
    original = teacher.processor.training_batch

    def one_token_short(prompts, responses):
        return original(prompts, [r[:-1] for r in responses])

    monkeypatch.setattr(teacher.processor, "training_batch", one_token_short)
    with pytest.raises(PreflightError, match=r"teacher default could not score a response to record .*LengthMismatch"):
        preflight.run(trainer.teachers, trainer.teacher_of, trainer.student_proc, trainer.samples, tmp_path)


def test_a_cross_tokenizer_teacher_passes_with_its_end_of_turn_named(tiny_dir, synth_dir, tmp_path, capsys):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path, student="qwen2-student", teacher="qwen2-xtok", family="text",
                      overrides=["logging.progress=true"])
    Trainer(cfg)
    assert "another vocabulary; the student's end of turn '<|im_end|>'" in capsys.readouterr().out
