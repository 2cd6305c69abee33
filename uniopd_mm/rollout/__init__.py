"""Student sampling engines behind one interface (``RolloutEngine``), picked by name, imported lazily."""

from __future__ import annotations

import importlib

from .base import RolloutEngine, RolloutOutput, SamplingParams, merge_prompt_major

ENGINES = {"hf": "uniopd_mm.rollout.hf:HFRollout", "vllm": "uniopd_mm.rollout.vllm:VLLMRollout"}


def make_rollout_engine(name: str, **kwargs) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout backend {name!r}; known: {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["ENGINES", "RolloutEngine", "RolloutOutput", "SamplingParams", "make_rollout_engine", "merge_prompt_major"]
