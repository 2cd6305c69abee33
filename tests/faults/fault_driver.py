"""Runs ``scripts/train_mm.py`` with one fault injected at a chosen point (a test helper).

    python tests/faults/fault_driver.py FAULT STEP [train_mm arguments ...]
    deepspeed ... tests/faults/fault_driver.py FAULT STEP [train_mm arguments ...]

FAULT (env FAULT_RANK picks the rank, default 0; FAULT_READY names the file written on arrival):
    hang_in_step    inside step STEP, while the teacher scores: write FAULT_READY, then wait to be killed
    hang_in_save    while the checkpoint of step STEP is being written (engine state and HF export on
                    disk, no COMPLETE marker yet): write FAULT_READY, then wait to be killed
    hang_in_prune   while an old checkpoint is being deleted after the save of step STEP
    die             inside step STEP: the process exits at once (os._exit(1)), as a crashed rank does
Other ranks run unchanged. The test sends SIGKILL; nothing here cleans up.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def arrive(ready: str) -> None:
    Path(ready).write_text(str(os.getpid()))
    while True:  # wait for SIGKILL
        time.sleep(1)


def install(fault: str, at_step: int) -> None:
    from uniopd_mm import checkpoint as ckpt
    from uniopd_mm.trainer import Trainer

    rank = int(os.environ.get("RANK", "0"))
    if rank != int(os.environ.get("FAULT_RANK", "0")):
        return
    ready = os.environ.get("FAULT_READY", "FAULT_READY")

    if fault in ("hang_in_step", "die"):
        original = Trainer.score_by_teacher

        def score_by_teacher(self, *args, **kwargs):
            if self.step + 1 == at_step:
                if fault == "die":
                    os._exit(1)
                arrive(ready)
            return original(self, *args, **kwargs)

        Trainer.score_by_teacher = score_by_teacher
    elif fault == "hang_in_save":
        original_save = Trainer.save_checkpoint

        def save_checkpoint(self):
            if self.step == at_step:
                export = self.engine.export_hf

                def export_then_hang(directory, processor):
                    export(directory, processor)
                    arrive(ready)

                self.engine.export_hf = export_then_hang
            return original_save(self)

        Trainer.save_checkpoint = save_checkpoint
    elif fault == "hang_in_prune":
        original_retire, state = ckpt.retire, {}
        original_save = Trainer.save_checkpoint

        def save_checkpoint(self):
            state["step"] = self.step
            return original_save(self)

        def retire(path):
            if state.get("step") == at_step:
                gone = path.parent / f".old-{path.name}"
                os.replace(path, gone)  # the rename has happened, the removal has not
                arrive(ready)
            original_retire(path)

        Trainer.save_checkpoint = save_checkpoint
        ckpt.retire = retire
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the deepspeed launcher adds it
    fault, step, rest = args[0], int(args[1]), args[2:]
    install(fault, step)
    import train_mm

    train_mm.main(rest)
