"""Settings the synthetic-picture studies share: the tiny Qwen2-VL pair, its pixel budget, its SFT / OPD config."""

from __future__ import annotations

from pathlib import Path

PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}
OPD_LR = SFT_LR = 1e-3


def model_cfg(path) -> dict:
    return {"path": str(path), "family": "qwen2_vl", "processor": PIXELS}


def base_cfg(model, out, train_path, test_path, steps, lr, seed=0, **train) -> dict:
    """A run of the tiny Qwen2-VL student: 24 new tokens, 4 samples, 32 prompts a step (``train`` overrides)."""
    return {
        "name": Path(out).name, "output_dir": str(out), "seed": seed, "student": model_cfg(model),
        "data": {"train_path": str(train_path), "test_path": str(test_path)},
        "rollout": {"max_new_tokens": 24, "n": 4},
        "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 64, "lr": lr, "warmup_steps": 5,
                  "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": 0.0, "resume": False, **train},
        "logging": {"progress": False, "tensorboard": False},
    }


def info_of(summary: dict) -> dict:
    """A prepared model's line in a report: held-out accuracy, the blind slice (when the test set has one), the
    per-domain accuracies, and the seconds making it took."""
    ev = summary["eval"]
    return {"accuracy": ev["eval/accuracy"], "blind": ev.get("eval/slice/blind"), "seconds": summary["seconds"],
            "per_domain": {k: v for k, v in ev.items() if k.count("/") == 2}}
