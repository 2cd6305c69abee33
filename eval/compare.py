"""Student, teacher and baselines side by side from eval/run.py result directories.

    python eval/compare.py RESULT_DIR_A RESULT_DIR_B ... [--labels student,teacher --out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from uniopd_mm.evalsuite.report import compare

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--labels", default=None, help="comma-separated column names (default: the directory names)")
    ap.add_argument("--out", type=Path, default=None, help="write compare.md and compare.png here")
    args = ap.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.results):
        ap.error(f"--labels has {len(labels)} names for {len(args.results)} result directories")
    print("\n".join(compare(args.results, args.out, labels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
