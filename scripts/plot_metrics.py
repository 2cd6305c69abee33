"""Draws the curves of a run's metrics.jsonl to PNG files.

    python scripts/plot_metrics.py RUN_DIR [--keys opd/reverse_kl,eval/accuracy,...] [--out RUN_DIR/plots]

Without --keys: one figure with the main curves (reverse KL, accuracy, order consistency when
logged, grad norm, response length, step time) and one PNG per logged key under plots/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniopd_mm.metrics import read_metrics  # noqa: E402

MAIN = ["opd/reverse_kl", "eval/accuracy", "reward/accuracy", "margin/inversion_rate", "train/grad_norm",
        "response/length_mean", "time/step"]


def series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot(run_dir: Path, keys: list[str] | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        raise SystemExit(f"no metrics in {run_dir / 'metrics.jsonl'}")
    out.mkdir(parents=True, exist_ok=True)
    logged = sorted({k for r in rows for k, v in r.items() if k != "step" and isinstance(v, (int, float))})
    wanted = keys or [k for k in MAIN if k in logged]
    written = []
    cols = min(3, len(wanted))
    rows_n = (len(wanted) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    for ax, key in zip(axes.flat, wanted):
        xs, ys = series(rows, key)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(wanted):]:
        ax.axis("off")
    fig.tight_layout()
    main = out / "curves.png"
    fig.savefig(main, dpi=110)
    plt.close(fig)
    written.append(main)
    if not keys:
        for key in logged:
            xs, ys = series(rows, key)
            fig, ax = plt.subplots(figsize=(4.5, 3.2))
            ax.plot(xs, ys)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = out / (key.replace("/", "__") + ".png")
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--keys", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    written = plot(args.run_dir, args.keys.split(",") if args.keys else None, args.out or args.run_dir / "plots")
    print(f"wrote {len(written)} PNG files; main figure: {written[0]}")


if __name__ == "__main__":
    main()
