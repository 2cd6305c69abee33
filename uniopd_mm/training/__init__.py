"""Training engines behind one interface (``TrainingEngine``): plain torch and DeepSpeed.

Backends are picked by name from a literal table and imported lazily, so ``import uniopd_mm``
never needs deepspeed.
"""

from __future__ import annotations

import importlib

from .base import TrainingEngine

ENGINES = {
    "torch": "uniopd_mm.training.torch_engine:TorchEngine",
    "deepspeed": "uniopd_mm.training.deepspeed_engine:DeepSpeedEngine",
}


def make_training_engine(name: str, **kwargs) -> TrainingEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown training engine {name!r}; known: {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["ENGINES", "TrainingEngine", "make_training_engine"]
