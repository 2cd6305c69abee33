"""Writes the synthetic multimodal task (images, videos, text; train and test JSONL).

    python scripts/make_synthetic_data.py --out artifacts/synthetic [--n-train 2000 --n-test 200
        --domains shapes-color,shapes-count,shapes-position,shapes-arith,motion,text-arith
        --levels 1,2 --cell 28 --video-frames 4 --seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.synthetic import ALL_DOMAINS, SyntheticSpec, generate  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--domains", default=",".join(ALL_DOMAINS))
    ap.add_argument("--levels", default="1")
    ap.add_argument("--cell", type=int, default=28, help="pixels per grid cell")
    ap.add_argument("--video-frames", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-overlap", action="store_true", help="test records may repeat train ones (tiny levels)")
    args = ap.parse_args(argv)
    spec = SyntheticSpec(
        n_train=args.n_train, n_test=args.n_test, seed=args.seed, domains=tuple(args.domains.split(",")),
        levels=tuple(int(x) for x in args.levels.split(",")), cell=args.cell, video_frames=args.video_frames,
        disjoint=not args.allow_overlap,
    )
    t0 = time.time()
    paths = generate(spec, args.out)
    import json

    for split, path in paths.items():
        counts = Counter(json.loads(line)["domain"] for line in open(path))
        print(f"{split}: {sum(counts.values())} records -> {path}  {dict(sorted(counts.items()))}")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
