"""Checkpoints that survive a kill: written to a temporary directory, marked complete, then renamed.

    checkpoints/step_000010/  engine/ (optimiser, scheduler, model: the engine's own format)
                              hf/     (the student in Hugging Face format, with its processor)
                              trainer_state.json, rng_rank<r>.pt, rank<r>.json, COMPLETE
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def save(engine, root: Path, step: int, state: dict, keep_last: int, processor=None, rank_state: dict | None = None) -> Path:
    """Writes the checkpoint of ``step`` (every rank calls this): the engine's state, each rank's RNG
    state and ``rank_state`` (``rank<r>.json``: what only that rank knows, such as the records it rejected) and,
    with a ``processor``, the model in Hugging Face format; rank 0 adds ``state`` and the COMPLETE marker,
    renames it into place and prunes to ``keep_last``."""
    main = engine.rank == 0
    tmp, final = tmp_dir(root, step), step_dir(root, step)
    if main:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale(root)
        tmp.mkdir(parents=True)
    engine.barrier()
    engine.save(tmp / "engine")
    torch.save(rng_state(), tmp / f"rng_rank{engine.rank}.pt")
    (tmp / f"rank{engine.rank}.json").write_text(json.dumps(rank_state or {}))
    if processor is not None:
        engine.export_hf(tmp / "hf", processor)
    engine.barrier()
    if main:
        finalize(tmp, final, state, keep_last)
    engine.barrier()
    return final


def resume(engine, root: Path) -> tuple[Path, dict] | None:
    """Loads the latest complete checkpoint under ``root`` into ``engine`` and this rank's RNG;
    returns (its directory, its saved state with ``ranks``: every rank's ``rank_state``, in rank order), or
    None when there is none. A checkpoint written by another number of processes is refused (each rank's
    shard of a ZeRO checkpoint, its RNG and its rejects belong to one rank of one world size)."""
    last = latest_complete(root)
    if last is None:
        return None
    state = json.loads((last / "trainer_state.json").read_text())
    saved = state.get("world_size")
    if saved is not None and saved != engine.world_size:
        raise RuntimeError(f"{last} was written by {saved} processes, this run has {engine.world_size}: resume with "
                           f"{saved} processes, or start afresh in another output_dir (or with train.resume=false)")
    ranks = sorted(last.glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    state["ranks"] = [json.loads(p.read_text()) for p in ranks]
    engine.load(last / "engine")
    rng = last / f"rng_rank{engine.rank}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    return last, state
