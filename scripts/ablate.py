"""Learning ablation on the synthetic task: every row gets the same seeds and the same wall-clock
budget of training, and is judged by greedy test accuracy against training time.

    python scripts/ablate.py [--out runs/ablate --budget 120 --seeds 0 --rows all]
    python scripts/ablate.py --held-out --out runs/ablate_heldout_frozen --budget 90 --eval-every 60 --seeds 0,1,2

Setup (cached under --out): synthetic image and video colour questions (by default the level-0 `make run`
task, whose test split repeats training questions; ``--held-out`` draws level-1 image colour questions with
2-3 shapes and disjoint splits, trains the teacher longer, turns the log-ratio mask off, and
leaves out the two-expert row),
a teacher made by SFT on both domains (the tiny qwen2_vl teacher preset), two expert teachers
(one SFT'd on the image questions only, one on the video questions only) for the multi-teacher
row, and a weak student (the student preset, fewer SFT steps). Then one run per row and seed:

- ``sft on teacher answers``: sequence-level KD, the baseline a user would try first: the teacher
  greedily answers every training prompt (the time this takes is charged to the row's budget)
  and the student is fine-tuned on those answers for the rest of the budget;
- ``opd``: plain sampled-token OPD (per-token reward log pi_T - log pi_theta, clipped PG);
- ``opd top-8 reverse KL`` / ``opd full reverse KL``: the exact reverse KL over the teacher's
  top-8 tokens (renormalised) or over the whole vocabulary, at every sampled position;
- ``opd full forward KL`` / ``opd full JSD 0.5``: GKD's divergences over the whole vocabulary at every
  position the student sampled (on-policy forward KL; generalised JSD with beta 0.5);
- ``+online balance``, ``+margin shift``, ``+margin mask``: one Uni-OPD component on top of OPD;
- ``uni-opd (mm preset)``, ``uni-opd (text preset)``: the full recipe with each preset;
- ``uni-opd with 2 expert teachers``: the mm preset with image prompts routed to the image expert and
  video prompts to the video expert (single teacher vs multi-teacher).

Writes results.json, results.md (the table) and curves.png (accuracy against training seconds;
reverse KL and inversion rate against step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}
DOMAINS = ("shapes-color", "video-color")
SEQKD = "sft on teacher answers"
MULTI = "uni-opd with 2 expert teachers"
ROWS = {
    SEQKD: None,
    "opd": ["algo.preset=opd"],
    "opd top-8 reverse KL": ["algo.preset=opd", "algo.loss=reverse_kl", "algo.distill_support=topk", "algo.topk=8"],
    "opd full reverse KL": ["algo.preset=opd", "algo.loss=reverse_kl", "algo.distill_support=full"],
    # GKD's divergences on the student's own samples: their gradient does not vanish where the student is
    # confidently wrong, the reverse KL's does (docs/results.md, "why OPD stalls on held-out questions")
    "opd full forward KL": ["algo.preset=opd", "algo.loss=forward_kl", "algo.distill_support=full"],
    "opd full JSD 0.5": ["algo.preset=opd", "algo.loss=jsd", "algo.jsd_beta=0.5", "algo.distill_support=full"],
    "+online balance": ["algo.preset=opd", "algo.balance.enabled=true"],
    "+margin shift": ["algo.preset=opd", "algo.margin.shift=true", "algo.margin.direction=correct_up",
                      "algo.margin.delta=0.0"],
    "+margin mask": ["algo.preset=opd", "algo.margin.mask=true", "algo.margin.delta=0.0"],
    "uni-opd (mm preset)": ["algo.preset=uniopd_mm"],
    "uni-opd (text preset)": ["algo.preset=uniopd_text"],
    MULTI: ["algo.preset=uniopd_mm"],
}
OPD_LR = 1e-3
SFT_LR = 1e-3


def model_cfg(path):
    return {"path": str(path), "family": "qwen2_vl", "processor": PIXELS}


def base_cfg(model, out, train_path, test_path, steps, lr, seed=0, **train):
    return {
        "name": Path(out).name, "output_dir": str(out), "seed": seed, "student": model_cfg(model),
        "data": {"train_path": str(train_path), "test_path": str(test_path)},
        "rollout": {"max_new_tokens": 24, "n": 4},
        "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 64, "lr": lr, "warmup_steps": 5,
                  "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": 0.0, "resume": False, **train},
        "logging": {"progress": False, "tensorboard": False},
    }


def setup(out: Path, tiny: Path, teacher_steps: int, student_steps: int, n_train: int = 1000, n_test: int = 100,
          level: int = 0, vision_lr_scale: float = 0.0, domains: tuple[str, ...] = DOMAINS, experts: bool = True):
    """Data, the teacher, the two expert teachers (when ``experts``) and the weak student (each cached).
    ``level`` >= 1 draws disjoint splits; ``vision_lr_scale`` applies to every SFT that makes a model."""
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(tiny, PRESET_GROUPS["minimal"], progress=False)
    data = out / "data"
    if not (data / "test.jsonl").exists():
        generate(SyntheticSpec(n_train=n_train, n_test=n_test, domains=domains, levels=(level,), disjoint=level >= 1),
                 data, progress=False)
    info = {}
    jobs = (("teacher", "qwen2_vl-teacher", "train.jsonl", "test.jsonl", teacher_steps),
            *((("teacher_image", "qwen2_vl-teacher", "train_image.jsonl", "test_image.jsonl", teacher_steps),
               ("teacher_video", "qwen2_vl-teacher", "train_video.jsonl", "test_video.jsonl", teacher_steps))
              if experts else ()),
            ("student", "qwen2_vl-student", "train.jsonl", "test.jsonl", student_steps))
    for role, preset, train, test, steps in jobs:
        summary = out / role / "summary.json"
        if not summary.exists():
            print(f"== setup: {role} ({steps} SFT steps on {train})", flush=True)
            t0 = time.time()
            res = run_sft(load_config(None, [], base=base_cfg(tiny / preset, out / role, data / train, data / test,
                                                              steps, SFT_LR, vision_lr_scale=vision_lr_scale)))
            summary.write_text(json.dumps({"accuracy": res["eval/accuracy"], "seconds": time.time() - t0,
                                           "per_domain": {k: v for k, v in res.items() if k.count("/") == 2}}))
        info[role] = json.loads(summary.read_text())
    return data, info


def teacher_labels(out: Path, data: Path) -> tuple[Path, float]:
    """The teacher's greedy answer to every training prompt, as SFT records (cached; returns the seconds
    it took when it was made)."""
    from uniopd_mm.data import load_jsonl
    from uniopd_mm.evaluate import evaluate
    from uniopd_mm.models import load_frozen
    from uniopd_mm.rollout import make_rollout_engine

    path, meta = data / "train_teacher_answers.jsonl", data / "train_teacher_answers.json"
    if meta.exists():
        return path, json.loads(meta.read_text())["seconds"]
    t0 = time.time()
    model, proc = load_frozen(out / "teacher" / "final", "qwen2_vl", PIXELS)
    samples = load_jsonl(data / "train.jsonl")
    preds: list = []
    evaluate(make_rollout_engine("hf", model=model, processor=proc, batch_size=64), proc, samples, 24, predictions=preds)
    answers = {p["id"]: p["response"] for p in preds}
    with open(data / "train.jsonl") as src, open(path, "w") as dst:
        for line in src:
            rec = json.loads(line)
            rec["messages"] = rec["messages"] + [{"role": "assistant", "content": [{"type": "text", "text": answers[rec["id"]]}]}]
            dst.write(json.dumps(rec) + "\n")
    seconds = time.time() - t0
    meta.write_text(json.dumps({"seconds": seconds, "teacher_train_accuracy": sum(p["correct"] is True for p in preds) / len(preds)}))
    return path, seconds


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_row(name, out, data, budget, seed, eval_every, start_acc, overrides=()):
    from uniopd_mm import checkpoint as ckpt
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    run_dir = out / "runs" / f"{slug(name)}-s{seed}"
    offset = 0.0  # seconds charged before training starts (the teacher labelling the data for SFT)
    t0 = time.time()
    # a row that ran to its end before (its final export is on disk) is read back, not trained again
    finished = (run_dir / "final").exists() if name == SEQKD else ckpt.latest_complete(run_dir / "checkpoints") is not None
    if finished:
        print(f"{name} (seed {seed}): finished before, read from {run_dir}")
        if name == SEQKD:
            offset = teacher_labels(out, data)[1]
    elif name == SEQKD:
        labels, offset = teacher_labels(out, data)
        cfg = base_cfg(out / "student" / "final", run_dir, labels, data / "test.jsonl", 100000, SFT_LR, seed=seed,
                       time_budget_s=max(budget - offset, 1.0), eval_every=eval_every, warmup_steps=0)
        run_sft(load_config(None, [], base=cfg))
    else:
        cfg = base_cfg(out / "student" / "final", run_dir, data / "train.jsonl", data / "test.jsonl", 100000, OPD_LR,
                       seed=seed, prompts_per_step=16, warmup_steps=0, eval_every=eval_every, time_budget_s=budget)
        if name == MULTI:
            cfg["teachers"] = {"image": model_cfg(out / "teacher_image" / "final"),
                               "video": model_cfg(out / "teacher_video" / "final")}
            cfg["data"] = {"mixture": [{"path": str(data / "train_image.jsonl"), "teacher": "image"},
                                       {"path": str(data / "train_video.jsonl"), "teacher": "video"}],
                           "test_path": str(data / "test.jsonl")}
        else:
            cfg["teacher"] = model_cfg(out / "teacher" / "final")
        Trainer(load_config(None, ROWS[name] + list(overrides), base=cfg)).train()
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["step"] > 0]
    # accuracy against training seconds (evaluation excluded; the labelling time of the SFT row included)
    evals = [(offset + (r.get("time/train_elapsed") or 0.0), r["eval/accuracy"]) for r in rows
             if r.get("eval/accuracy") is not None]
    if rows[0]["step"] != 0:  # SFT does not evaluate before its first step: the student's start accuracy
        evals.insert(0, (0.0, start_acc))

    def tail_mean(key, k):
        xs = [r.get(key) for r in train[-k:] if r.get(key) is not None]
        return sum(xs) / len(xs) if xs else None

    return {
        "row": name, "seed": seed, "steps": train[-1]["step"] if train else 0, "acc_start": evals[0][1],
        "acc_end": evals[-1][1], "acc_best": max(a for _, a in evals), "train_seconds": evals[-1][0],
        "wall_seconds": None if finished else time.time() - t0, "label_seconds": offset,
        "reverse_kl_end": tail_mean("opd/reverse_kl", 5), "inversion_end": tail_mean("margin/inversion_rate", 5),
        "curves": {"eval": evals, "rkl": [(r["step"], r.get("opd/reverse_kl")) for r in train],
                   "inversion": [(r["step"], r.get("margin/inversion_rate")) for r in train]},
    }


# two-sided 95% quantiles of Student's t by degrees of freedom (larger ones fall back to the nearest below)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def interval(xs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval; 0 with one value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    t = T975.get(n - 1) or T975[max(k for k in T975 if k <= n - 1)]
    return m, t * sd / math.sqrt(n)


def cell(xs, spec: str = ".3f") -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m, h = interval(xs)
    return format(m, spec) + (f" ± {format(h, spec)}" if len(xs) > 1 else "")


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def time_to(curve, target):
    """First training second at which the accuracy curve reaches ``target`` (None: never)."""
    return next((t for t, a in curve if a >= target - 1e-9), None)


def reach_cell(times: list) -> str:
    """A table cell for per-seed ``time_to`` results: their mean over the seeds that reached the target (with the
    count when not all did), "not reached", or "-" where no seed has a curve."""
    reached = [t for t in times if t is not None]
    if not times:
        return "-"
    if not reached:
        return "not reached"
    return f"{mean(reached):.0f}" + ("" if len(reached) == len(times) else f" ({len(reached)}/{len(times)} seeds)")


def write_report(results, info, out: Path, args) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_row: dict[str, list] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    teacher = info["teacher"]["accuracy"]
    experts = (f" (image expert {info['teacher_image']['accuracy']:.2f} on images, video expert "
               f"{info['teacher_video']['accuracy']:.2f} on videos)") if "teacher_image" in info else ""
    lines = [f"Teacher (SFT) accuracy {teacher:.2f}{experts}; student start "
             f"{info['student']['accuracy']:.2f}. Budget {args.budget:.0f} s of training per row (evaluation not "
             f"counted), seeds {args.seeds}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}. "
             "OPD rows: 16 prompts x 4 samples per step, lr 1e-3; SFT row: 32 prompts per step, lr 1e-3. "
             f"Data: difficulty {args.level}, "
             + ("test questions and scenes never seen in training" if args.level >= 1 else
                "the test split repeats training questions")
             + f"; log-ratio mask: {'off' if args.logratio_threshold == 'null' else args.logratio_threshold or 'the preset default'}.",
             "Acc at budget: mean over seeds with its 95% t-interval.",
             "", "| row | acc start | acc at budget | per seed | best acc | s to 90% of gap | steps | reverse KL (last 5) | "
             "inversion (last 5) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by_row.items():
        t90 = reach_cell([time_to(r["curves"]["eval"], r["acc_start"] + 0.9 * (teacher - r["acc_start"])) for r in rs])
        per_seed = " / ".join(fmt(r["acc_end"], ".2f") for r in sorted(rs, key=lambda r: r["seed"]))
        lines.append(f"| {name} | {fmt(mean([r['acc_start'] for r in rs]))} | {cell([r['acc_end'] for r in rs])} | "
                     f"{per_seed} | {fmt(mean([r['acc_best'] for r in rs]))} | {t90} | {fmt(mean([r['steps'] for r in rs]), '.0f')} | "
                     f"{fmt(mean([r['reverse_kl_end'] for r in rs]))} | {fmt(mean([r['inversion_end'] for r in rs]))} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"info": info, "budget": args.budget, "results": results}, indent=1))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    styles = ("-", "--", ":", "-.")
    palette = plt.get_cmap("tab20").colors if len(by_row) > 10 else [f"C{k}" for k in range(10)]  # one per row
    for k, (name, rs) in enumerate(by_row.items()):
        color = palette[k % len(palette)]
        # every seed: one colour per row, one line style per seed (solid = the first seed)
        for j, r in enumerate(sorted(rs, key=lambda r: r["seed"])):
            for ax, key in zip(axes, ("eval", "rkl", "inversion")):
                pts = [p for p in r["curves"][key] if p[1] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linestyle=styles[j % len(styles)],
                            label=name if j == 0 else None, marker="o" if key == "eval" else None, markersize=3,
                            linewidth=1.2 if j == 0 else 0.9, alpha=1.0 if j == 0 else 0.7)
    for ax, title, xlabel in zip(axes, ("greedy test accuracy", "reverse KL (sampled tokens)", "pairwise inversion rate"),
                                 ("training seconds", "step", "step")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(teacher, color="k", linestyle="--", linewidth=0.8, label="teacher")
    axes[0].legend(fontsize=7)
    seeds = sorted({r["seed"] for r in results})
    if len(seeds) > 1:
        fig.suptitle("seeds " + ", ".join(f"{s} ({styles[j % len(styles)]})" for j, s in enumerate(seeds)), fontsize=9)
    return finish_report(fig, out, lines)


def finish_report(fig, out: Path, lines: list[str]) -> list[str]:
    """Saves the figure as out/curves.png and prints the table and where everything went."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training per row")
    ap.add_argument("--eval-every", type=int, default=20, help="greedy evaluation every N steps")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rows", default="all", help=f"comma-separated subset of: {', '.join(ROWS)}")
    ap.add_argument("--held-out", action="store_true",
                    help="level-1 questions with disjoint splits (test questions and scenes never seen in training); "
                         "changes the defaults below to --domains shapes-color --level 1 --n-train 4000 "
                         "--teacher-steps 3000 --student-steps 300 --logratio-threshold null")
    ap.add_argument("--domains", default=None,
                    help="synthetic domains (default shapes-color,video-color; --held-out: shapes-color, whose "
                         "teacher reaches ~1 within the setup's SFT steps; the multi-teacher row needs both)")
    ap.add_argument("--level", type=int, default=None, help="synthetic difficulty (default 0: test repeats training questions)")
    ap.add_argument("--teacher-steps", type=int, default=None, help="SFT steps making each teacher (default 200)")
    ap.add_argument("--student-steps", type=int, default=None, help="SFT steps making the weak student (default 100)")
    ap.add_argument("--n-train", type=int, default=None, help="synthetic training records (default 1000)")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--sft-vision-lr-scale", type=float, default=0.0,
                    help="vision tower learning-rate scale of the SFT making the teachers and the student (default 0: "
                         "a random tiny tower trained at the language model's rate stops the model learning from it, "
                         "docs/results.md; the held-out table of 2026-11-30 used 1)")
    ap.add_argument("--logratio-threshold", default=None,
                    help="algo.logratio_threshold of every OPD row ('null' turns the mask off; default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a dotted config override for every OPD row (repeatable), e.g. --set train.lr=1e-4")
    args = ap.parse_args(argv)
    defaults = ({"level": 1, "n_train": 4000, "teacher_steps": 3000, "student_steps": 300,
                 "logratio_threshold": "null", "domains": "shapes-color"} if args.held_out else
                {"level": 0, "n_train": 1000, "teacher_steps": 200, "student_steps": 100,
                 "domains": ",".join(DOMAINS)})
    for key, value in defaults.items():
        if getattr(args, key) is None:  # an explicit option wins
            setattr(args, key, value)
    overrides = ([] if args.logratio_threshold is None else [f"algo.logratio_threshold={args.logratio_threshold}"]) + args.set
    domains = tuple(args.domains.split(","))
    both = set(DOMAINS) <= set(domains)
    rows = [r for r in ROWS if r != MULTI or both] if args.rows == "all" else args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if MULTI in rows and not both:
        ap.error(f"the row {MULTI!r} routes image and video prompts to two experts: --domains needs {','.join(DOMAINS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    data, info = setup(args.out, args.tiny, args.teacher_steps, args.student_steps, args.n_train, args.n_test,
                       args.level, args.sft_vision_lr_scale, domains, experts=MULTI in rows)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in rows:
            print(f"== {name} (seed {seed}, {args.budget:.0f} s)", flush=True)
            results.append(run_row(name, args.out, data, args.budget, seed, args.eval_every, info["student"]["accuracy"],
                                   overrides))
            write_report(results, info, args.out, args)  # partial results survive an interrupted run
    return results


if __name__ == "__main__":
    main()
