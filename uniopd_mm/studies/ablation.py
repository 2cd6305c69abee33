"""Learning ablation on the synthetic pictures: every row gets the same seeds and the same wall-clock budget of
training, and is judged by greedy test accuracy against training time.

    python scripts/study.py ablation [--out runs/ablate --budget 120 --seeds 0 --rows all]
    python scripts/study.py ablation --held-out --out runs/ablate_heldout_frozen --budget 90 --eval-every 60 --seeds 0,1,2

Setup (cached under --out): image and video colour questions (by default level 0, whose test split repeats
training questions; ``--held-out`` draws level-1 image colour questions with disjoint splits, trains the teacher
longer, turns the log-ratio mask off and leaves out the two-expert row), a teacher made by SFT on both domains,
two expert teachers (image only, video only) for the multi-teacher row, and a weak student (fewer SFT steps).

Rows: ``sft on teacher answers`` (the teacher greedily answers every training prompt, charged to the row's budget,
then SFT for the rest); ``opd`` (sampled-token OPD); the exact reverse KL over the teacher's top-8 or the whole
vocabulary; GKD's forward KL and JSD(0.5) over the vocabulary on the student's samples; one Uni-OPD component on
top of OPD (online balance, margin shift, margin mask); the full recipe with each preset; and the mm preset with
image prompts routed to the image expert and video prompts to the video expert.
Writes results.json, results.md (the table) and curves.png (accuracy against training seconds; reverse KL and
inversion rate against step).
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import OPD_LR, SFT_LR, base_cfg, info_of, model_cfg
from .harness import by_row, chosen_rows, figure, grid_parser, report, run_grid, seeds_of, sft_model, teacher_labels
from .stats import cell, fmt, mean, reach_cell, time_to

DOMAINS = ("shapes-color", "video-color")
SEQKD = "sft on teacher answers"
MULTI = "uni-opd with 2 expert teachers"
OPD = ["algo.preset=opd"]
ROWS = {
    SEQKD: None,
    "opd": OPD,
    "opd top-8 reverse KL": OPD + ["algo.loss=reverse_kl", "algo.distill_support=topk", "algo.topk=8"],
    "opd full reverse KL": OPD + ["algo.loss=reverse_kl", "algo.distill_support=full"],
    # GKD's divergences on the student's own samples: their gradient does not vanish where the student is
    # confidently wrong, the reverse KL's does (docs/results.md)
    "opd full forward KL": OPD + ["algo.loss=forward_kl", "algo.distill_support=full"],
    "opd full JSD 0.5": OPD + ["algo.loss=jsd", "algo.jsd_beta=0.5", "algo.distill_support=full"],
    "+online balance": OPD + ["algo.balance.enabled=true"],
    "+margin shift": OPD + ["algo.margin.shift=true", "algo.margin.direction=correct_up", "algo.margin.delta=0.0"],
    "+margin mask": OPD + ["algo.margin.mask=true", "algo.margin.delta=0.0"],
    "uni-opd (mm preset)": ["algo.preset=uniopd_mm"],
    "uni-opd (text preset)": ["algo.preset=uniopd_text"],
    MULTI: ["algo.preset=uniopd_mm"],
}
HELD_OUT = {"level": 1, "n_train": 4000, "teacher_steps": 3000, "student_steps": 300, "logratio_threshold": "null",
            "domains": "shapes-color"}
LEVEL_0 = {"level": 0, "n_train": 1000, "teacher_steps": 200, "student_steps": 100, "domains": ",".join(DOMAINS)}


def prepare(args) -> tuple[Path, dict]:
    """Data, the teacher, the two expert teachers (when the multi-teacher row runs) and the weak student."""
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(args.tiny, PRESET_GROUPS["minimal"], progress=False)
    out, data = args.out, args.out / "data"
    if not (data / "test.jsonl").exists():
        generate(SyntheticSpec(n_train=args.n_train, n_test=args.n_test, domains=tuple(args.domains.split(",")),
                               levels=(args.level,), disjoint=args.level >= 1), data, progress=False)
    experts = (("teacher_image", "qwen2_vl-teacher", "image", args.teacher_steps),
               ("teacher_video", "qwen2_vl-teacher", "video", args.teacher_steps)) if MULTI in args.rows else ()
    info = {}
    for role, preset, part, steps in (("teacher", "qwen2_vl-teacher", "", args.teacher_steps), *experts,
                                      ("student", "qwen2_vl-student", "", args.student_steps)):
        split = f"_{part}" if part else ""
        cfg = base_cfg(args.tiny / preset, out / role, data / f"train{split}.jsonl", data / f"test{split}.jsonl",
                       steps, SFT_LR, vision_lr_scale=args.sft_vision_lr_scale)
        info[role] = info_of(sft_model(out / role, cfg, role))
    return data, info


def run_row(name: str, seed: int, run_dir: Path, args, data: Path, info: dict) -> dict:
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    out, offset, t0 = args.out, 0.0, time.time()  # offset: seconds charged before training (the labelling)
    if name == SEQKD:
        labels, offset = teacher_labels(out / "teacher" / "final", "qwen2_vl", model_cfg("")["processor"],
                                        data / "train.jsonl", data / "train_teacher_answers.jsonl")
        cfg = base_cfg(out / "student" / "final", run_dir, labels, data / "test.jsonl", args.steps or 100000, SFT_LR,
                       seed=seed, time_budget_s=max(args.budget - offset, 1.0), eval_every=args.eval_every, warmup_steps=0)
        run_sft(load_config(None, [], base=cfg))
    else:
        cfg = base_cfg(out / "student" / "final", run_dir, data / "train.jsonl", data / "test.jsonl", args.steps or 100000, OPD_LR,
                       seed=seed, prompts_per_step=16, warmup_steps=0, eval_every=args.eval_every,
                       time_budget_s=args.budget)
        if name == MULTI:
            cfg["teachers"] = {"image": model_cfg(out / "teacher_image" / "final"),
                               "video": model_cfg(out / "teacher_video" / "final")}
            cfg["data"] = {"mixture": [{"path": str(data / "train_image.jsonl"), "teacher": "image"},
                                       {"path": str(data / "train_video.jsonl"), "teacher": "video"}],
                           "test_path": str(data / "test.jsonl")}
        else:
            cfg["teacher"] = model_cfg(out / "teacher" / "final")
        Trainer(load_config(None, ROWS[name] + args.overrides, base=cfg)).train()
    return record(name, seed, read_metrics(run_dir / "metrics.jsonl"), offset, info["student"]["accuracy"],
                  time.time() - t0)


def record(name: str, seed: int, rows: list[dict], offset: float, start_acc: float, wall: float) -> dict:
    """A run's result: accuracy against training seconds (evaluation excluded, the labelling time of the SFT row
    included), the reverse KL and inversion rate against step, and their means over the last 5 steps."""
    train = [r for r in rows if r["step"] > 0]
    evals = [(offset + (r.get("time/train_elapsed") or 0.0), r["eval/accuracy"]) for r in rows
             if r.get("eval/accuracy") is not None]
    if rows[0]["step"] != 0:  # SFT does not evaluate before its first step: the student's start accuracy
        evals.insert(0, (0.0, start_acc))

    def tail_mean(key):
        return mean([r.get(key) for r in train[-5:]])

    return {
        "row": name, "seed": seed, "steps": train[-1]["step"] if train else 0, "acc_start": evals[0][1],
        "acc_end": evals[-1][1], "acc_best": max(a for _, a in evals), "train_seconds": evals[-1][0],
        "wall_seconds": wall, "label_seconds": offset,
        "reverse_kl_end": tail_mean("opd/reverse_kl"), "inversion_end": tail_mean("margin/inversion_rate"),
        "curves": {"eval": evals, "rkl": [(r["step"], r.get("opd/reverse_kl")) for r in train],
                   "inversion": [(r["step"], r.get("margin/inversion_rate")) for r in train]},
    }


def render(payload: dict) -> list[str]:
    """The table, from the stored payload alone."""
    info, s = payload["info"], payload["settings"]
    teacher = info["teacher"]["accuracy"]
    experts = (f" (image expert {info['teacher_image']['accuracy']:.2f} on images, video expert "
               f"{info['teacher_video']['accuracy']:.2f} on videos)") if "teacher_image" in info else ""
    mask = "off" if s["logratio_threshold"] == "null" else s["logratio_threshold"] or "the preset default"
    lines = [f"Teacher (SFT) accuracy {teacher:.2f}{experts}; student start {info['student']['accuracy']:.2f}. "
             f"Budget {s['budget']:.0f} s of training per row (evaluation not counted), seeds {s['seeds']}, "
             f"{payload['cpu_count']} CPU cores, {payload['date']}. OPD rows: 16 prompts x 4 samples per step, lr 1e-3; "
             f"SFT row: 32 prompts per step, lr 1e-3. Data: difficulty {s['level']}, "
             + ("test questions and scenes never seen in training" if s["level"] >= 1 else
                "the test split repeats training questions") + f"; log-ratio mask: {mask}.",
             "Acc at budget: mean over seeds with its 95% t-interval.", "",
             "| row | acc start | acc at budget | per seed | best acc | s to 90% of gap | steps | reverse KL (last 5) | "
             "inversion (last 5) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by_row(payload["results"]).items():
        t90 = reach_cell([time_to(r["curves"]["eval"], r["acc_start"] + 0.9 * (teacher - r["acc_start"])) for r in rs])
        per_seed = " / ".join(fmt(r["acc_end"], ".2f") for r in rs)
        lines.append(f"| {name} | {fmt(mean([r['acc_start'] for r in rs]))} | {cell([r['acc_end'] for r in rs])} | "
                     f"{per_seed} | {fmt(mean([r['acc_best'] for r in rs]))} | {t90} | "
                     f"{fmt(mean([r['steps'] for r in rs]), '.0f')} | {fmt(mean([r['reverse_kl_end'] for r in rs]))} | "
                     f"{fmt(mean([r['inversion_end'] for r in rs]))} |")
    return lines


def plot(payload: dict):
    """Accuracy against training seconds, reverse KL and inversion rate against step: a colour per row, a line
    style per seed (solid: the first)."""
    import matplotlib.pyplot as plt

    fig, axes = figure(3, 16 / 3)
    rows = by_row(payload["results"])
    styles = ("-", "--", ":", "-.")
    palette = plt.get_cmap("tab20").colors if len(rows) > 10 else [f"C{k}" for k in range(10)]
    for k, (name, rs) in enumerate(rows.items()):
        for j, r in enumerate(rs):
            for ax, key in zip(axes, ("eval", "rkl", "inversion")):
                pts = [p for p in r["curves"][key] if p[1] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=palette[k % len(palette)],
                            linestyle=styles[j % 4], label=name if j == 0 else None,
                            marker="o" if key == "eval" else None, markersize=3, linewidth=1.2 if j == 0 else 0.9,
                            alpha=1.0 if j == 0 else 0.7)
    for ax, title, xlabel in zip(axes, ("greedy test accuracy", "reverse KL (sampled tokens)", "pairwise inversion rate"),
                                 ("training seconds", "step", "step")):
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(payload["info"]["teacher"]["accuracy"], color="k", linestyle="--", linewidth=0.8, label="teacher")
    axes[0].legend(fontsize=7)
    return fig



def parse(argv=None):
    ap = grid_parser("ablation", __doc__, Path("runs/ablate"), ROWS)
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--held-out", action="store_true", help=f"level-1 questions with disjoint splits; defaults {HELD_OUT}")
    ap.add_argument("--domains", default=None, help="synthetic domains (default shapes-color,video-color)")
    ap.add_argument("--level", type=int, default=None, help="synthetic difficulty (default 0)")
    ap.add_argument("--teacher-steps", type=int, default=None, help="SFT steps making each teacher (default 200)")
    ap.add_argument("--student-steps", type=int, default=None, help="SFT steps making the weak student (default 100)")
    ap.add_argument("--n-train", type=int, default=None, help="synthetic training records (default 1000)")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--sft-vision-lr-scale", type=float, default=0.0,
                    help="vision tower learning-rate scale of the SFT making the teachers and the student")
    ap.add_argument("--logratio-threshold", default=None, help="of every OPD row ('null': mask off; default: preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a dotted config override for every OPD row (repeatable), e.g. --set train.lr=1e-4")
    args = ap.parse_args(argv)
    for key, value in (HELD_OUT if args.held_out else LEVEL_0).items():
        if getattr(args, key) is None:  # an explicit option wins
            setattr(args, key, value)
    args.overrides = ([] if args.logratio_threshold is None else [f"algo.logratio_threshold={args.logratio_threshold}"]
                      ) + args.set
    both = set(DOMAINS) <= set(args.domains.split(","))
    args.rows = chosen_rows(ap, args.rows, ROWS, [r for r in ROWS if r != MULTI or both])
    if MULTI in args.rows and not both:
        ap.error(f"the row {MULTI!r} routes image and video prompts to two experts: --domains needs {','.join(DOMAINS)}")
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data, info = prepare(args)
    settings = {k: getattr(args, k) for k in ("budget", "seeds", "level", "logratio_threshold")}
    jobs = [(name, seed) for seed in seeds_of(args.seeds) for name in args.rows]
    return run_grid(args.out, jobs, lambda name, seed, run_dir: run_row(name, seed, run_dir, args, data, info),
                    lambda results: report(args.out, {"info": info, "settings": settings, "budget": args.budget,
                                                      "results": results}, render, plot), desc="ablation",
                    report_only=args.report_only)
