"""Distillation works: an SFT teacher, a weaker student, and 60 OPD steps (about 80 s on 2 cores).

The task is the synthetic colour question at difficulty 0 (one shape; test records may repeat
train ones at this level). The vision towers stay frozen (train.vision_lr_scale=0, see docs/training.md).
"""

from __future__ import annotations

from conftest import TINY_PIXELS

from uniopd_mm.config import load_config
from uniopd_mm.metrics import read_metrics
from uniopd_mm.sft import run_sft
from uniopd_mm.synthetic import SyntheticSpec, generate
from uniopd_mm.trainer import Trainer


def _cfg(model, out, data, steps, lr, teacher=None, **train):
    base = {
        "name": "distill", "output_dir": str(out), "seed": 0,
        "student": {"path": str(model), "family": "qwen2_vl", "processor": TINY_PIXELS},
        "teacher": {"path": str(teacher), "family": "qwen2_vl", "processor": TINY_PIXELS} if teacher else None,
        "data": {"train_path": str(data / "train.jsonl"), "test_path": str(data / "test.jsonl")},
        "rollout": {"max_new_tokens": 16, "n": 4},
        "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 64, "lr": lr, "warmup_steps": 5,
                  "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": 0.0, **train},
        "logging": {"progress": False, "tensorboard": False},
    }
    return load_config(None, [], base=base)


def test_opd_moves_the_student_toward_the_teacher(tiny_dir, tmp_path):
    data = tmp_path / "data"
    generate(SyntheticSpec(n_train=1000, n_test=60, domains=("shapes-color",), levels=(0,), disjoint=False), data,
             progress=False)
    teacher = run_sft(_cfg(tiny_dir / "qwen2_vl-teacher", tmp_path / "teacher", data, 150, 1e-3))
    student = run_sft(_cfg(tiny_dir / "qwen2_vl-student", tmp_path / "student", data, 100, 1e-3))
    assert teacher["eval/accuracy"] >= 0.9
    assert student["eval/accuracy"] <= teacher["eval/accuracy"] - 0.2
    cfg = _cfg(tmp_path / "student" / "final", tmp_path / "opd", data, 60, 2e-3, teacher=tmp_path / "teacher" / "final",
               prompts_per_step=16, warmup_steps=0, eval_every=60)
    Trainer(cfg).train()
    rows = read_metrics(tmp_path / "opd" / "metrics.jsonl")
    before = next(r for r in rows if r["step"] == 0)["eval/accuracy"]
    after = next(r for r in rows if r["step"] == 60)["eval/accuracy"]
    rkl = [r["opd/reverse_kl"] for r in rows if r["step"] > 0]
    acc = [r["reward/accuracy"] for r in rows if r["step"] > 0]
    first, last = sum(acc[:10]) / 10, sum(acc[-10:]) / 10
    print(f"teacher {teacher['eval/accuracy']:.2f}; student greedy {before:.2f} -> {after:.2f}, sampled {first:.2f} -> "
          f"{last:.2f}; reverse KL {sum(rkl[:5]) / 5:.3f} -> {sum(rkl[-5:]) / 5:.3f}")
    assert sum(rkl[-5:]) / 5 < 0.8 * sum(rkl[:5]) / 5
    # the student's own samples (first and last 10 steps) and its greedy test accuracy both rise (measured
    # 2026-11-30: sampled 0.28 -> 0.78, greedy 0.72 -> 1.00). NOTE: difficulty 0 repeats train questions in the
    # test split, so this shows the machinery learns, not generalisation (make run's held-out data does that)
    assert last > first
    assert after > before
