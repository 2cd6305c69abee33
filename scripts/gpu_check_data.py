"""The GPU check's datasets, for a GPU machine that cannot write videos (no PyAV there): made here, carried.

    python scripts/gpu_check_data.py --out .gpu/data
    GPU_CHECK_DATA=.gpu/data bash scripts/gpu_check.sh        # on the GPU machine

Writes ``tests/`` (the spec of the test suite's ``synth_dir`` fixture), ``synthetic/`` (the tiny configs'
artifacts/synthetic, smaller) and ``bench/`` (``scripts/bench_gpu.py``'s colour questions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.synthetic import SyntheticSpec, generate  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    generate(SyntheticSpec(n_train=48, n_test=12, levels=(1, 2)), args.out / "tests", progress=False)
    generate(SyntheticSpec(n_train=200, n_test=40), args.out / "synthetic", progress=False)
    generate(SyntheticSpec(n_train=64, n_test=4, domains=("shapes-color", "video-color"), levels=(0,)),
             args.out / "bench", progress=False)
    print(f"GPU check data in {args.out}")


if __name__ == "__main__":
    main()
