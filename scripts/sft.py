"""Supervised fine-tuning (makes teachers and weak students for the synthetic task).

    python scripts/sft.py --config scripts/configs/sft_tiny_teacher.yaml [dotted.key=value ...]
    deepspeed scripts/sft.py --config ...            # the DeepSpeed engine

Writes <output_dir>/final (Hugging Face format with the processor) and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft

    overrides = list(args.overrides)
    if (args.local_rank is not None or "LOCAL_RANK" in os.environ) and not any(o.startswith("train.engine=") for o in overrides):
        overrides.append("train.engine=deepspeed")
    result = run_sft(load_config(args.config, overrides))
    print(json.dumps({k: v for k, v in result.items() if k.startswith("eval/") or k in ("final", "train/loss")}, indent=1))
    return result


if __name__ == "__main__":
    main()
