"""Builds tiny random-weight Qwen-family models sharing one locally trained tokenizer, offline.

    python scripts/make_tiny_models.py --out artifacts/tiny [--preset all|minimal|NAME ...]

Presets: <family>-student / <family>-teacher for qwen2_vl, qwen2_5_vl, qwen3_vl, qwen2, qwen3;
qwen2_vl-teacher-think and qwen3-teacher-think (a chat template with an empty <think> block);
qwen2-lm64 (head_dim 64, for vLLM's CPU backend); qwen2-xtok (a different vocabulary).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.tiny import PRESET_GROUPS, PRESETS, make_tiny_models  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory; one sub-directory per preset")
    ap.add_argument("--preset", nargs="+", default=["all"], help=f"groups {sorted(PRESET_GROUPS)} or names {sorted(PRESETS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = []
    for p in args.preset:
        names += PRESET_GROUPS.get(p, [p])
    t0 = time.time()
    paths = make_tiny_models(args.out, list(dict.fromkeys(names)), seed=args.seed)
    for name, path in paths.items():
        info = json.loads((path / "tiny_preset.json").read_text())
        print(f"{name:26s} {info['params']:>10,d} params  vocab {info['vocab']:>5d}  {path}")
    print(f"built {len(paths)} models in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
