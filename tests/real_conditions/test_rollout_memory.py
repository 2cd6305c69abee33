"""A rollout never holds [N, T, V]: its peak memory grows with N x T, not N x T x V.

On a 151,936-token vocabulary, N = 4 responses of T = 1,024 tokens would hold 4 x 1024 x 151936 x 4 bytes =
2.49 GB of float32 logits (twice that with the CPU copy the old code made). Each measurement runs in a fresh
process and is printed. NOTE: glibc's malloc raises its mmap threshold as large blocks are freed, after which
freed [N, V] buffers stay in its heap and RSS creeps up with the number of decoding steps although nothing is
held; the helper runs with a fixed threshold (MALLOC_MMAP_THRESHOLD_=131072) so RSS is what the program holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("rollout_memory.py")


def measure(model: Path, n: int, t: int, decoder: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, str(HELPER), str(model), str(n), str(t), decoder, *extra], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def ntv_bytes(n: int, t: int) -> int:
    return n * t * 151_936 * 4  # the float32 logits of every step, stacked


@pytest.mark.parametrize("decoder", ["generate", pytest.param("static", marks=pytest.mark.slow)])
def test_peak_memory_of_a_long_rollout_is_not_n_t_v(real_dir, decoder):
    n = 4
    short, long = (measure(real_dir / "qwen2_5-real", n, t, decoder) for t in (256, 1024))
    assert long["vocab"] == 151_936 and long["tokens"] >= n * 1024 * 0.8  # the random model rarely stops early
    for row in (short, long):
        print(f"{decoder}: N={n} T={row['t']} V={row['vocab']}: peak RSS grew {row['peak_growth_bytes'] / 2**20:.0f} "
              f"MiB (holding [N, T, V] float32: {ntv_bytes(n, row['t']) / 2**20:.0f} MiB)")
    assert long["peak_growth_bytes"] < 0.25 * ntv_bytes(n, 1024)
    # 768 more decoding steps add next to nothing: memory goes with N x T (ids, log-probs, KV cache), not x V
    assert long["peak_growth_bytes"] - short["peak_growth_bytes"] < 0.05 * (ntv_bytes(n, 1024) - ntv_bytes(n, 256))


@pytest.mark.slow
def test_the_measurement_sees_held_logits(real_dir):
    """The same measurement on a rollout that stacks its logits, as the old one did: it sees them."""
    n, t = 4, 256
    row = measure(real_dir / "qwen2_5-real", n, t, "generate", "--hold-logits")
    print(f"holding logits: N={n} T={t}: peak RSS grew {row['peak_growth_bytes'] / 2**20:.0f} MiB "
          f"([N, T, V] float32: {ntv_bytes(n, t) / 2**20:.0f} MiB)")
    assert row["peak_growth_bytes"] > ntv_bytes(n, t)
