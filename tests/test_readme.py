"""The README's commands work as written: every file it names exists, every config it launches loads, the
eval command's flags exist, and the tiny training command runs (two steps, in a directory whose artifacts/ hold
what `make models data` builds). The GPU launch line is checked as far as a CPU can: its config loads."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from uniopd_mm.config import load_config
from uniopd_mm.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text()


def commands() -> list[str]:
    """Shell commands of the README: its bash blocks (continuation lines joined) and inline `deepspeed ...` /
    `python ...` spans."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line:
                found.append(" ".join(line.split()))
    found += [" ".join(m.split()) for m in re.findall(r"`((?:deepspeed|python) [^`]+)`", TEXT)]
    return found


def test_every_file_the_readme_names_exists():
    paths = set(re.findall(r"\b((?:scripts|eval|demo|docs|uniopd_mm|processors|tests)/[\w./-]+\.(?:py|yaml|md|png))", TEXT))
    assert len(paths) >= 8
    assert not [p for p in sorted(paths) if not (ROOT / p).exists()]


def test_every_config_the_readme_launches_loads():
    configs = {c.split("--config ")[1].split()[0] for c in commands() if "--config " in c}
    assert {"scripts/configs/gpu/qwen2_5_vl_7b_to_3b.yaml", "scripts/configs/tiny_qwen2_vl.yaml"} <= configs
    for path in configs:
        load_config(ROOT / path)


def test_the_eval_command_uses_flags_that_exist():
    help_text = subprocess.run([sys.executable, str(ROOT / "eval" / "run.py"), "--help"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout
    evals = [c for c in commands() if c.startswith("python eval/run.py")]
    assert evals
    for cmd in evals:
        for flag in re.findall(r"(--[\w-]+)", cmd):
            assert flag in help_text, flag


def test_the_tiny_training_command_runs_as_written(tmp_path, tiny_dir, synth_dir):
    (cmd,) = [c for c in commands() if c.startswith("deepspeed scripts/train_mm.py") and "tiny_" in c]
    (tmp_path / "artifacts").mkdir()
    os.symlink(tiny_dir, tmp_path / "artifacts" / "tiny")
    os.symlink(synth_dir, tmp_path / "artifacts" / "synthetic")
    os.symlink(ROOT / "scripts", tmp_path / "scripts")
    argv = shlex.split(cmd)
    argv = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", "29655"] + argv[1:]
    argv += ["output_dir=run", "train.steps=2", "train.prompts_per_step=4", "rollout.n=2", "rollout.max_new_tokens=8",
             "train.eval_every=0", "logging.progress=false"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("target", ["models", "data"])
def test_the_make_targets_the_readme_names_exist(target):
    assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M)
