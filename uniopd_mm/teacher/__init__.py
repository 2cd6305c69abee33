"""Teacher scorers behind one interface (``TeacherScorer``), picked by name, imported lazily."""

from __future__ import annotations

import importlib

from .base import TeacherScorer, TeacherScores

BACKENDS = {"hf": "uniopd_mm.teacher.hf:HFTeacher", "vllm": "uniopd_mm.teacher.vllm:VLLMTeacher",
            "served": "uniopd_mm.teacher.vllm:ServedTeacher"}


def make_teacher(backend: str, **kwargs) -> TeacherScorer:
    if backend not in BACKENDS:
        raise ValueError(f"unknown teacher backend {backend!r}; known: {sorted(BACKENDS)}")
    module, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["BACKENDS", "TeacherScorer", "TeacherScores", "make_teacher"]
