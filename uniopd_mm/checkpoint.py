"""Checkpoints that survive a kill: written to a temporary directory, marked complete, then renamed.

    checkpoints/step_000010/  engine/ (optimiser, scheduler, model: the engine's own format)
                              hf/     (the student in Hugging Face format, with its processor)
                              trainer_state.json, rng_rank<r>.pt, COMPLETE
A directory without COMPLETE, or still named ``.tmp-*`` (being written) or ``.old-*`` (being
deleted), is never loaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

COMPLETE = "COMPLETE"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def tmp_dir(root: Path, step: int) -> Path:
    return root / f".tmp-step_{step:06d}"


def latest_complete(root: str | Path) -> Path | None:
    root = Path(root)
    if not root.exists():
        return None
    done = sorted(p for p in root.glob("step_*") if (p / COMPLETE).exists())
    return done[-1] if done else None


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def finalize(tmp: Path, final: Path, trainer_state: dict, keep_last: int) -> None:
    """Rank 0 only: writes the trainer state and the COMPLETE marker, renames, prunes old ones."""
    with open(tmp / "trainer_state.json", "w") as fh:
        json.dump(trainer_state, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    (tmp / COMPLETE).write_text("ok\n")
    if final.exists():
        retire(final)
    os.replace(tmp, final)
    done = sorted(p for p in final.parent.glob("step_*") if (p / COMPLETE).exists())
    for old in done[:-keep_last]:
        retire(old)


def retire(path: Path) -> None:
    """Deletes a checkpoint so that a kill part-way never leaves a loadable half: it is first renamed
    (atomically) out of the ``step_*`` namespace, then removed."""
    gone = path.parent / f".old-{path.name}"
    if gone.exists():
        shutil.rmtree(gone, ignore_errors=True)
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def clean_stale(root: Path) -> None:
    """Removes half-written ``.tmp-*`` and half-deleted ``.old-*`` directories left by a kill."""
    for p in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        shutil.rmtree(p, ignore_errors=True)
