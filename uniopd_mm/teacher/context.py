"""A teacher with privileged context: the teacher reads a prompt built from the record with fields the student
never sees (a system prompt, the worked solution, the answer, a hint), through the same processors as every
other prompt, so text, image and video records alike.

``privileged_sample`` is the pure transform (tested by hand); ``ContextTeacher`` applies it to every record
before the wrapped teacher scores it. The student's prompt, its rollouts and its responses are unchanged: only
the teacher's conditioning differs, so the per-token reward log pi_T(y | x, c) - log pi_S(y | x) moves the
student towards what it would write had it been given c (on-policy context distillation / self-distillation
when the teacher is the student's own starting weights, ``teacher.path: student``).
"""

from __future__ import annotations

import copy
import re

from ..data import DataError, Sample
from .base import TeacherScorer, TeacherScores

FIELD = re.compile(r"\{([A-Za-z_][\w.]*)\}")


def record_field(sample: Sample, name: str) -> str:
    """A record's field by dotted name (``answer``, ``meta.solution``, ``meta.hint``), as text; a missing one is a
    DataError naming the record and the field."""
    head, *rest = name.split(".")
    value = getattr(sample, head, None) if head in ("id", "answer", "domain", "text_view", "meta") else None
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict):
        raise DataError(f"{sample.source or sample.id}: teacher.context needs the field {name!r}, which the record lacks")
    return str(value)


def fill(template: str, sample: Sample) -> str:
    """``template`` with each ``{field}`` replaced by the record's field (``{meta.solution}``, ``{answer}``)."""
    return FIELD.sub(lambda m: record_field(sample, m.group(1)), template)


def privileged_sample(sample: Sample, system: str | None = None, user_suffix: str | None = None) -> Sample:
    """The record as the teacher reads it: ``system`` (filled) as the system message (joined after an existing
    one), ``user_suffix`` (filled) as a text part after the last user turn's parts. Images and videos stay where
    they are; the record itself is not changed."""
    out = copy.copy(sample)
    messages = [dict(m, content=list(m["content"])) for m in sample.messages]
    if user_suffix:
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None:
            raise DataError(f"{sample.source or sample.id}: teacher.context.user_suffix needs a user turn")
        messages[last]["content"].append({"type": "text", "text": fill(user_suffix, sample)})
    if system:
        text = fill(system, sample)
        if messages and messages[0]["role"] == "system":
            messages[0]["content"].append({"type": "text", "text": "\n\n" + text})
        else:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": text}]})
    out.messages = messages
    return out


def as_read_by_teacher(samples, context: dict | None) -> list:
    """``samples`` as a teacher with ``context`` (``system`` / ``user_suffix``, as teacher.context) reads them."""
    if not context:
        return list(samples)
    return [privileged_sample(s, context.get("system"), context.get("user_suffix")) for s in samples]


class ContextTeacher(TeacherScorer):
    """Scores through ``teacher`` with every record made privileged first (a bad record fails its own rows, as
    any teacher's bad record does)."""

    def __init__(self, teacher, system: str | None, user_suffix: str | None):
        self.teacher, self.system, self.user_suffix = teacher, system, user_suffix
        self.name = teacher.name

    def __getattr__(self, name):  # the wrapped teacher's processor, model, batch size ... (benchmarks, routing)
        return getattr(self.__dict__["teacher"], name)

    def score(self, samples, responses, topk: int = 0, full: bool = False) -> TeacherScores:
        prepared, bad = [], {}
        for i, s in enumerate(samples):
            try:
                prepared.append(privileged_sample(s, self.system, self.user_suffix))
            except DataError as e:
                prepared.append(s)
                bad[i] = str(e)
        scores = self.teacher.score(prepared, responses, topk=topk, full=full)
        for i, reason in bad.items():
            scores.failed[i] = True
            scores.reasons[i] = reason
            scores.logprobs[i] = 0.0
        return scores
