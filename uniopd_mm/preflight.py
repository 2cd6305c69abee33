"""Checks before step 1 that each teacher scores what the student samples (``train.preflight``).

What users of every OPD framework report after hours of a healthy-looking loss: a vision-language teacher that
never received the pixels ("trains blind"), a teacher whose chat template ends a turn with another token than
the student's (the student's stop is then an unexpected token to it), a teacher that scores a different number
of tokens than the student sampled. Each check scores one training record through the teacher's own interface
(local, vLLM or served alike) and stops the run with a message naming the teacher and the record.

1. End of turn: with a shared vocabulary, the student's end-of-turn token must end a response for the teacher
   too; with another vocabulary the local teacher scores the student's stop as its own end of turn (said in the log).
2. Token count: the teacher scores every token of a response the student could give (the record's answer and the
   student's end of turn), no more, no less.
3. Pixels: a teacher that reads pixels scores the record with its images, and with each image replaced by a gray
   one of the same size; if no log-prob moves, it does not see the images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch


class PreflightError(RuntimeError):
    """A teacher would not score what the student samples; the message says which and why."""


def token_name(tokenizer, token_id) -> str:
    return f"{tokenizer.convert_ids_to_tokens(int(token_id))!r} (id {token_id})" if token_id is not None else "none"


def probe_response(student_proc, sample) -> list[int]:
    """A response the student could give: the record's answer (or a word) and its end-of-turn token."""
    text = (sample.answer or "ok").strip() or "ok"
    stop = student_proc.end_of_turn_id
    stop = stop if stop is not None else student_proc.eos_token_ids[0]
    return student_proc.tokenizer(text, add_special_tokens=False)["input_ids"] + [stop]


def check_end_of_turn(name: str, teacher, student_proc) -> str:
    stop = student_proc.end_of_turn_id
    proc = getattr(teacher, "processor", None)
    if proc is None:
        return f"teacher {name}: end of turn not checked (no processor)"
    if getattr(teacher, "shared_vocab", True):
        if stop != proc.end_of_turn_id:
            raise PreflightError(
                f"teacher {name}: the student ends a response with {token_name(student_proc.tokenizer, stop)}, which "
                f"does not end one for the teacher (its chat template ends an assistant turn with "
                f"{token_name(proc.tokenizer, proc.end_of_turn_id)}); the teacher would score every stop as an "
                "unexpected token. Give both the same chat template's end of turn (teacher.path's chat template)")
        return f"teacher {name}: the student's end of turn {token_name(student_proc.tokenizer, stop)} ends the teacher's turns too"
    return (f"teacher {name}: another vocabulary; the student's end of turn {token_name(student_proc.tokenizer, stop)} "
            f"is scored as the teacher's {token_name(proc.tokenizer, proc.end_of_turn_id)}")


def check_token_count(name: str, teacher, sample, response: list[int]):
    scores = teacher.score([sample], [response])
    if bool(scores.failed[0]):
        raise PreflightError(f"teacher {name} could not score a response to record {sample.id!r} ({sample.source}): "
                             f"{scores.reasons[0]}")
    scored = int(scores.token_mask[0, : len(response)].sum()) if scores.token_mask is not None else len(response)
    if scored != len(response):
        raise PreflightError(f"teacher {name} scored {scored} of the {len(response)} tokens of a response to record "
                             f"{sample.id!r}: its tokens do not line up with the student's")
    return scores


def blank_images(sample, folder: Path):
    """``sample`` with every image replaced by a uniform gray one of the same size (a distinct cache key)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    messages = []
    for m in sample.messages:
        parts = []
        for i, p in enumerate(m["content"]):
            if p["type"] == "image":
                with Image.open(p["image"]) as im:
                    size = im.size
                path = folder / f"gray_{len(messages)}_{i}_{size[0]}x{size[1]}.png"
                Image.new("RGB", size, (128, 128, 128)).save(path)
                p = {**p, "image": str(path)}
            parts.append(p)
        messages.append({**m, "content": parts})
    return dataclasses.replace(sample, messages=messages, source=f"{sample.source}#preflight-gray")


def check_pixels(name: str, teacher, sample, response: list[int], scores, folder: Path) -> str:
    blank = teacher.score([blank_images(sample, folder)], [response])
    if bool(blank.failed[0]):
        raise PreflightError(f"teacher {name} could not score record {sample.id!r} with gray images: {blank.reasons[0]}")
    moved = (scores.logprobs[0, : len(response)] - blank.logprobs[0, : len(response)]).abs().max().item()
    if not moved > 1e-6:
        raise PreflightError(
            f"teacher {name} gives the same log-probs to a response to record {sample.id!r} ({sample.source}) with its "
            f"images and with gray ones (largest change {moved:.2g}): it does not see the images. Check that its "
            "engine receives the pixels (a vLLM or served teacher: multi_modal_data), that its vision weights loaded, "
            "and its view (teacher.view: text reads the record's text_view instead)")
    return f"teacher {name}: sees the images (log-probs move by up to {moved:.3g} with gray ones)"


def first_scored(name: str, teacher, student_proc, candidates, tries: int):
    """(sample, response, scores) of the first of ``candidates`` (at most ``tries``) the teacher scores; a record
    the teacher cannot take (a prompt too long for it, say) is skipped, as the trainer would skip it."""
    error = None
    for sample in candidates[:tries]:
        response = probe_response(student_proc, sample)
        try:
            return sample, response, check_token_count(name, teacher, sample, response)
        except PreflightError as e:
            error = e
    if error is not None:
        raise error
    return None


def run(teachers: dict, route, student_proc, samples, out: Path, tries: int = 8) -> list[str]:
    """Runs the checks for every teacher on the first of ``samples`` routed to it that it can score (and, for a
    teacher that reads pixels, the first with images); returns the log lines. ``route(sample)``: the sample's
    teacher name."""
    lines = []
    for name, teacher in teachers.items():
        lines.append(check_end_of_turn(name, teacher, student_proc))
        mine = [s for s in samples if _routes_to(route, s, name)]
        with torch.no_grad():
            found = first_scored(name, teacher, student_proc, mine, tries)
            if found is None:
                lines.append(f"teacher {name}: no training record routes to it; token count and pixels not checked")
                continue
            sample, response, _ = found
            lines.append(f"teacher {name}: scores all {len(response)} tokens of a probe response to record {sample.id!r}")
            proc = getattr(teacher, "processor", None)
            if proc is None or not proc.is_multimodal or proc.view != "pixels":
                continue
            visual = first_scored(name, teacher, student_proc, [s for s in mine if s.images], tries)
            if visual is None:
                lines.append(f"teacher {name}: no training record with images; pixels not checked")
                continue
            lines.append(check_pixels(name, teacher, *visual, out / "preflight"))
    return lines


def _routes_to(route, sample, name) -> bool:
    try:
        return route(sample) == name
    except Exception:  # noqa: BLE001 - a record that routes nowhere is the data loader's to reject
        return False
