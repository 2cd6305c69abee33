"""Helpers of the fault-injection suite: config files for subprocess runs, and running a training
process until it reaches an injected fault point, then killing it with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "faults" / "fault_driver.py"


def write_config(cfg, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(asdict(cfg)))
    return path


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A process in its own session (so killpg reaches every child), output to ``log``."""
    fh = open(log, "ab")
    # NOTE: not the distributed variables of this pytest process (an in-process DeepSpeed engine set
    # MASTER_PORT, whose port it still holds)
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**inherited, **(env or {})})


def kill9_when_ready(proc: subprocess.Popen, ready: Path, log: Path, timeout: float = 300) -> None:
    """Waits until the fault point writes ``ready``, then SIGKILLs the whole process group."""
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before the fault point:\n{log.read_text()[-4000:]}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"fault point not reached in {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ready.unlink()


def train_cmd(config: Path, *overrides: str, fault: str | None = None, step: int = 0) -> list[str]:
    if fault is None:
        return [sys.executable, str(ROOT / "scripts" / "train_mm.py"), "--config", str(config), *overrides]
    return [sys.executable, str(DRIVER), fault, str(step), "--config", str(config), *overrides]
