"""Supervised fine-tuning (makes teachers and weak students for the synthetic task).

    python scripts/sft.py --config scripts/configs/sft_tiny_teacher.yaml [dotted.key=value ...]
    deepspeed scripts/sft.py --config ...            # the DeepSpeed engine

Writes <output_dir>/final (Hugging Face format with the processor) and metrics.jsonl.
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
    from uniopd_mm.sft import run_sft

    result = run_sft(config_from_cli(argv, __doc__))
    print(json.dumps({k: v for k, v in result.items() if k.startswith("eval/") or k in ("final", "train/loss")}, indent=1))
    return result


if __name__ == "__main__":
    main()
    from uniopd_mm.training.deepspeed_engine import shutdown_distributed

    shutdown_distributed()
