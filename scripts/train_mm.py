"""Uni-OPD / OPD training: the student samples, the teacher scores, a clipped update learns.

    deepspeed scripts/train_mm.py --config scripts/configs/tiny_qwen2_vl.yaml [dotted.key=value ...]
    deepspeed --num_gpus 2 scripts/train_mm.py --config ... train.engine=deepspeed   # 2 processes (CPU too)
    python scripts/train_mm.py --config scripts/configs/tiny_qwen2_vl.yaml train.engine=torch

Under the deepspeed launcher the engine is DeepSpeed whatever the config says (ZeRO stage from
train.zero_stage). Outputs: <output_dir>/metrics.jsonl, tb/, checkpoints/step_*/hf (the student
in Hugging Face format), rejects.jsonl.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> dict:
    from uniopd_mm.config import config_from_cli
    from uniopd_mm.trainer import Trainer

    trainer = Trainer(config_from_cli(argv, __doc__))
    result = trainer.train()
    if trainer.is_main:
        keys = [k for k in result if k.startswith(("eval/", "opd/reverse_kl", "reward/")) or k == "checkpoint"]
        print(json.dumps({k: result[k] for k in keys}, indent=1))
    return result


if __name__ == "__main__":
    main()
    from uniopd_mm.training.deepspeed_engine import shutdown_distributed

    shutdown_distributed()
