"""A teacher with privileged context (uniopd_mm/teacher/context.py): the record as the teacher reads it, by hand;
its scores against a direct transformers forward on the chat template of hand-written messages; an image record's
prompt through the HF processor as the model card builds it; and a training step whose teacher is the student's
own starting weights reading a system prompt the student never sees."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from uniopd_mm.data import DataError, Sample
from uniopd_mm.teacher.context import ContextTeacher, privileged_sample


def text_record(**kw) -> Sample:
    return Sample(id="q1", messages=[{"role": "user", "content": [{"type": "text", "text": "What is (2 + 3) * 4?"}]}],
                  answer="20", meta={"solution": "2 + 3 = 5. 5 * 4 = 20."}, source="train.jsonl:1", **kw)


def test_privileged_sample_by_hand():
    rec = text_record()
    got = privileged_sample(rec, system="Answer {answer}-style: a number only.", user_suffix="\nSolution: {meta.solution}")
    assert got.messages == [
        {"role": "system", "content": [{"type": "text", "text": "Answer 20-style: a number only."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is (2 + 3) * 4?"},
                                     {"type": "text", "text": "\nSolution: 2 + 3 = 5. 5 * 4 = 20."}]}]
    assert len(rec.messages) == 1 and len(rec.messages[0]["content"]) == 1  # the record itself is untouched
    # an existing system message is extended, not replaced
    sys_rec = Sample(id="q2", messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                                        *rec.messages])
    assert privileged_sample(sys_rec, system="Numbers only.").messages[0]["content"] == [
        {"type": "text", "text": "Be brief."}, {"type": "text", "text": "\n\nNumbers only."}]
    with pytest.raises(DataError, match=r"train.jsonl:1: teacher.context needs the field 'meta.hint'"):
        privileged_sample(rec, user_suffix="{meta.hint}")


def test_context_teacher_scores_like_a_direct_forward_on_the_hand_written_prompt(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from processors import make_processor
    from uniopd_mm.teacher.hf import HFTeacher

    path = tiny_dir / "qwen3-teacher"
    proc = make_processor("text", str(path))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    teacher = ContextTeacher(HFTeacher(model, proc, device="cpu"), "Reply with a number.", " (hint: {answer})")
    bad = Sample(id="q3", messages=text_record().messages)  # no answer: its rows fail, the others are scored
    responses = [proc.tokenizer(t, add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1] for t in ("20", "21")]
    got = teacher.score([text_record(), bad], responses)
    assert got.failed.tolist() == [False, True] and "needs the field 'answer'" in got.reasons[1]
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "system", "content": "Reply with a number."},
                                    {"role": "user", "content": "What is (2 + 3) * 4? (hint: 20)"}],
                                   tokenize=False, add_generation_prompt=True)
    r = responses[0]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"] + r])
    with torch.no_grad():
        z = model(input_ids=ids).logits[0, -len(r) - 1:-1].float()
    z[:, proc.suppressed_token_ids] = float("-inf")
    ref = torch.log_softmax(z, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
    assert torch.allclose(got.logprobs[0, : len(r)], ref, atol=1e-5)
    plain = HFTeacher(model, proc, device="cpu").score([text_record()], responses[:1])
    assert not torch.allclose(plain.logprobs[0, : len(r)], ref, atol=1e-3)  # the context changed the scores


def test_image_record_keeps_its_image_and_reads_the_context(tiny_dir, synth_samples):
    from transformers import AutoProcessor

    from processors import make_processor

    path = tiny_dir / "qwen2_vl-teacher"
    rec = next(s for s in synth_samples if s.images)
    rec.meta = {**rec.meta, "solution": "circle: red, so red"}
    proc = make_processor("qwen2_vl", str(path))
    got = proc.encode_prompt(privileged_sample(rec, system="Say the colour.", user_suffix=" Hint: {meta.solution}"))
    question = "".join(p["text"] for p in rec.messages[-1]["content"] if p["type"] == "text")
    # the model card's recipe: the processor's chat template on the messages with the image part in place
    card = AutoProcessor.from_pretrained(path).apply_chat_template(
        [{"role": "system", "content": [{"type": "text", "text": "Say the colour."}]},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question},
                                      {"type": "text", "text": " Hint: circle: red, so red"}]}],
        tokenize=False, add_generation_prompt=True)
    assert got.text == card


def test_self_distillation_step_teacher_reads_what_the_student_never_sees(tiny_dir, synth_dir, tmp_path):
    from uniopd_mm.trainer import Trainer

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", student="qwen3-student", family="text", overrides=[
        "teacher.path=student", "teacher.family=text", "teacher.context.system=Answer in one word.", "train.steps=1"])
    assert cfg.teacher.path == str(tiny_dir / "qwen3-student")
    trainer = Trainer(cfg)
    (teacher,) = trainer.teachers.values()
    assert isinstance(teacher, ContextTeacher)
    seen = []
    encode = teacher.teacher.encode
    teacher.teacher.encode = lambda s: seen.append(encode(s).text) or encode(s)
    trainer.train()
    assert seen and all("Answer in one word." in t for t in seen)
    student_prompts = [trainer.student_proc.encode_prompt(s).text for s in synth_records(synth_dir)]
    assert not any("Answer in one word." in t for t in student_prompts)


def synth_records(synth_dir):
    from uniopd_mm.data import load_jsonl

    return load_jsonl(synth_dir / "train.jsonl", strict=True)[:4]
