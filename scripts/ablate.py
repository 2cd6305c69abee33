"""Ablation of the Uni-OPD components on the synthetic task, same seeds and steps for every row.

    python scripts/ablate.py [--out runs/ablate --steps 60 --domains shapes-color --level 0 --seeds 0]

Setup (cached under --out): synthetic data, a teacher fine-tuned with SFT (the tiny qwen2_vl
teacher preset) and a weaker student (the student preset, fewer SFT steps). Then one OPD run per
row: plain OPD, online balancing alone, margin shift alone, greedy margin mask alone, full Uni-OPD
(multimodal preset: r = 1, mean / correct_up / delta 0) and the text preset (mean / both / delta
0.4). Writes results.json, results.md (the table) and curves.png (accuracy, reverse KL and
inversion rate over steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}
ROWS = {
    "opd": ["algo.preset=opd"],
    "+online balance": ["algo.balance.enabled=true"],
    "+margin shift": ["algo.margin.shift=true", "algo.margin.direction=correct_up", "algo.margin.delta=0.0"],
    "+margin mask": ["algo.margin.mask=true", "algo.margin.delta=0.0"],
    "uni-opd (mm preset)": ["algo.preset=uniopd_mm"],
    "uni-opd (text preset)": ["algo.preset=uniopd_text"],
}


def base_cfg(model, out, data, steps, lr, teacher=None, seed=0, **train):
    return {
        "name": Path(out).name, "output_dir": str(out), "seed": seed,
        "student": {"path": str(model), "family": "qwen2_vl", "processor": PIXELS},
        "teacher": {"path": str(teacher), "family": "qwen2_vl", "processor": PIXELS} if teacher else None,
        "data": {"train_path": str(data / "train.jsonl"), "test_path": str(data / "test.jsonl")},
        "rollout": {"max_new_tokens": 24, "n": 4},
        "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 64, "lr": lr, "warmup_steps": 5,
                  "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": 0.0, "resume": False, **train},
        "logging": {"progress": False, "tensorboard": False},
    }


def setup(out: Path, domains, level, tiny: Path, teacher_steps: int = 150, student_steps: int = 100):
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(tiny, PRESET_GROUPS["minimal"], progress=False)
    data = out / "data"
    if not (data / "test.jsonl").exists():
        generate(SyntheticSpec(n_train=1000, n_test=100, domains=tuple(domains), levels=(level,), disjoint=level > 0),
                 data, progress=False)
    info = {}
    for role, preset, steps in (("teacher", "qwen2_vl-teacher", teacher_steps), ("student", "qwen2_vl-student", student_steps)):
        final = out / role / "final"
        if not final.exists():
            t0 = time.time()
            res = run_sft(load_config(None, [], base=base_cfg(tiny / preset, out / role, data, steps, 1e-3)))
            info[role] = {"accuracy": res["eval/accuracy"], "seconds": time.time() - t0}
            (out / role / "summary.json").write_text(json.dumps(info[role]))
        else:
            info[role] = json.loads((out / role / "summary.json").read_text())
    return data, info


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def run_row(name, overrides, out, data, steps, seed):
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.trainer import Trainer

    run_dir = out / "runs" / f"{name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'plus_')}-s{seed}"
    cfg = base_cfg(out / "student" / "final", run_dir, data, steps, 2e-3, teacher=out / "teacher" / "final", seed=seed,
                   prompts_per_step=16, warmup_steps=0, eval_every=max(1, steps // 4))
    t0 = time.time()
    Trainer(load_config(None, overrides, base=cfg)).train()
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["step"] > 0]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    return {
        "row": name, "seed": seed, "acc_before": evals[0][1], "acc_after": evals[-1][1],
        "reverse_kl_end": mean([r["opd/reverse_kl"] for r in train[-5:]]),
        "inversion_start": mean([r.get("margin/inversion_rate") for r in train[:5]]),
        "inversion_end": mean([r.get("margin/inversion_rate") for r in train[-5:]]),
        "sampled_acc_end": mean([r["reward/accuracy"] for r in train[-10:]]),
        "seconds": time.time() - t0,
        "curves": {"eval": evals, "rkl": [(r["step"], r["opd/reverse_kl"]) for r in train],
                   "inversion": [(r["step"], r.get("margin/inversion_rate")) for r in train]},
    }


def write_report(results, info, out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_row: dict[str, list] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    lines = [f"Teacher (SFT) accuracy {info['teacher']['accuracy']:.2f}; student start {info['student']['accuracy']:.2f}; "
             f"{args.steps} OPD steps x 16 prompts x 4 samples; seeds {args.seeds}; domains {args.domains}, level {args.level}.",
             "", "| row | acc before | acc after | sampled acc (last 10) | reverse KL (last 5) | inversion start | inversion end | s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rs in by_row.items():
        lines.append(f"| {name} | {mean([r['acc_before'] for r in rs]):.3f} | {mean([r['acc_after'] for r in rs]):.3f} | "
                     f"{mean([r['sampled_acc_end'] for r in rs]):.3f} | {mean([r['reverse_kl_end'] for r in rs]):.3f} | "
                     f"{mean([r['inversion_start'] for r in rs]):.3f} | {mean([r['inversion_end'] for r in rs]):.3f} | "
                     f"{mean([r['seconds'] for r in rs]):.0f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, rs in by_row.items():
        for ax, key in zip(axes, ("eval", "rkl", "inversion")):
            pts = [p for p in rs[0]["curves"][key] if p[1] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="o" if key == "eval" else None)
    for ax, title in zip(axes, ("greedy accuracy (test)", "reverse KL (sampled tokens)", "pairwise inversion rate")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--domains", default="shapes-color")
    ap.add_argument("--level", type=int, default=0)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--teacher-steps", type=int, default=150, help="SFT steps making the teacher")
    ap.add_argument("--student-steps", type=int, default=100, help="SFT steps making the weak student")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data, info = setup(args.out, args.domains.split(","), args.level, args.tiny, args.teacher_steps, args.student_steps)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.rows.split(","):
            print(f"== {name} (seed {seed})", flush=True)
            results.append(run_row(name, ROWS[name], args.out, data, args.steps, seed))
    write_report(results, info, args.out, args)
    return results


if __name__ == "__main__":
    main()
