"""The imperfect-teacher benchmark: a teacher with a systematic blind spot learned from its data, and a weak
student trained on correct data. Every row gets the same seeds and the same wall-clock training budget and is
judged by greedy accuracy on held-out questions, overall and on the blind-spot slice.

    python scripts/study.py blindspot [--out runs/blindspot --budget 120 --seeds 0,1,2,3,4 --rows all]
    python scripts/study.py blindspot --quick --out /tmp/bs     # one seed, a few steps: every row's pipeline

Setup (cached under --out): colour questions ("What color is the circle?", answers stating the fact first:
"circle: blue, so blue"); the teacher is fine-tuned on a copy of the training data in which every "blue" answer
reads "green" (the blind spot), the student on the correct data with fewer steps. The test questions whose
answer is blue form the ``blind`` slice (``meta.slice``, reported as ``eval/slice/blind``).

Rows: the blind teacher itself; SFT on its greedy answers (the labelling is a one-off preparation: reported, not
charged); plain OPD and one Uni-OPD component on top of it (online balance, margin shift, margin mask, offline
balance, whose scoring pass is reported, not charged); the full recipe with each preset, with the shift reaching
masked tokens, with the text preset's margin at 10; outcome-only GRPO at the OPD rate and a tenth of it; OPD and
the mm preset at that rate; OPD plus the group-normalised outcome. Writes results.json, results.md (accuracy
overall and on the blind slice, 95% t-intervals over seeds, the inversion rate, steps, time to half the gap) and
curves.png (both accuracies against training seconds; the bar chart with intervals).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .common import OPD_LR, SFT_LR, base_cfg, info_of, model_cfg
from .harness import (by_row, cached_json, chosen_rows, figure, grid_parser, report, run_grid, seeds_of, sft_model,
                      split_rows, teacher_labels)
from .stats import cell, interval, reach_cell, time_to

BLIND, SHOWN_AS = "blue", "green"  # the teacher learns "green" wherever the truth is "blue"
TEACHER, SEQKD, OFFLINE = "teacher", "sft on teacher answers", "+offline balance"
REACH = "uni-opd (mm) + shift reaches dropped tokens"
OPD = ["algo.preset=opd"]
ROWS = {
    TEACHER: None,
    SEQKD: None,
    "opd": OPD,
    "+online balance": OPD + ["algo.balance.enabled=true"],
    "+margin shift": OPD + ["algo.margin.shift=true", "algo.margin.direction=correct_up", "algo.margin.delta=0.0"],
    "+margin mask": OPD + ["algo.margin.mask=true", "algo.margin.delta=0.0"],
    OFFLINE: OPD,
    "uni-opd (mm preset)": ["algo.preset=uniopd_mm"],
    "uni-opd (text preset)": ["algo.preset=uniopd_text"],
    REACH: ["algo.preset=uniopd_mm", "algo.margin.reach=response"],
    "uni-opd (text preset, delta 10)": ["algo.preset=uniopd_text", "algo.margin.delta=10.0"],
    "grpo": OPD + ["algo.advantage=grpo"],
    "grpo (lr 1e-4)": OPD + ["algo.advantage=grpo", "train.lr=1e-4"],
    # the rate at which GRPO wins, given to OPD too: is the gap the objective or a tuning?
    "opd (lr 1e-4)": OPD + ["train.lr=1e-4"],
    "uni-opd (mm preset, lr 1e-4)": ["algo.preset=uniopd_mm", "train.lr=1e-4"],
    "opd + outcome reward": OPD + ["algo.advantage=opd+outcome"],
}


def blind_copy(rec: dict) -> dict:
    """The record as the teacher is taught it: a blue answer (and the fact stated before it) reads green."""
    if rec["answer"] != BLIND:
        return rec
    rec = json.loads(json.dumps(rec))
    rec["answer"] = SHOWN_AS
    rec["meta"]["solution"] = re.sub(rf"\b{BLIND}\b", SHOWN_AS, rec["meta"]["solution"])
    return rec


def make_data(out: Path, n_train: int, n_test: int, level: int, disjoint: bool) -> Path:
    from uniopd_mm.synthetic import SyntheticSpec, generate

    data = out / "data"
    if (data / "test.jsonl").exists():
        return data
    generate(SyntheticSpec(n_train=n_train, n_test=n_test, domains=("shapes-color",), levels=(level,),
                           disjoint=disjoint), data, progress=False)
    lines = (data / "train.jsonl").read_text().splitlines()
    (data / "train_blind.jsonl").write_text("".join(json.dumps(blind_copy(json.loads(x))) + "\n" for x in lines))
    test = [json.loads(x) for x in (data / "test.jsonl").read_text().splitlines()]
    for rec in test:
        if rec["answer"] == BLIND:
            rec["meta"]["slice"] = "blind"
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return data


def prepare(args) -> tuple[Path, dict]:
    """Data, the blind teacher and the weak student (each cached); their accuracy overall and on the slice."""
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(args.tiny, PRESET_GROUPS["minimal"], progress=False)
    data = make_data(args.out, args.n_train, args.n_test, args.level, not args.overlap)
    info = {}
    for role, preset, train, steps in ((TEACHER, "qwen2_vl-teacher", "train_blind.jsonl", args.teacher_steps),
                                       ("student", "qwen2_vl-student", "train.jsonl", args.student_steps)):
        cfg = base_cfg(args.tiny / preset, args.out / role, data / train, data / "test.jsonl", steps, SFT_LR,
                       vision_lr_scale=args.vision_lr_scale)
        info[role] = info_of(sft_model(args.out / role, cfg, role))
    return data, info


def offline_balanced(out: Path, data: Path) -> tuple[Path, float]:
    """The training prompts upsampled by the student's pass counts (uniopd_mm.offline_balance; cached, with the
    seconds its scoring took)."""
    import time

    import yaml

    from uniopd_mm import offline_balance

    path = data / "train_offline.jsonl"

    def make() -> dict:
        cfg_path = out / "student_sampling.yaml"
        student = model_cfg(out / "student" / "final")
        cfg_path.write_text(yaml.safe_dump({"student": student, "teacher": student,
                                            "data": {"train_path": str(data / "train.jsonl")},
                                            "rollout": {"max_new_tokens": 24}, "logging": {"progress": False}}))
        t0 = time.time()
        offline_balance.main(["--config", str(cfg_path), "--data", str(data / "train.jsonl"), "--out", str(path),
                              "--n", "4"])
        return {"seconds": time.time() - t0}

    return path, cached_json(data / "train_offline.json", make)["seconds"]


def run_row(name: str, seed: int, run_dir: Path, args, data: Path, info: dict) -> dict:
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    if name == TEACHER:
        t = info[TEACHER]
        return {"row": name, "seed": seed, "acc": t["accuracy"], "blind": t["blind"], "steps": 0, "inversion": None,
                "curve": []}
    steps, out = args.steps or 100000, args.out
    # one-off preparations are reported, not charged to the budget: the teacher labelling the training prompts for
    # SFT and offline balancing's scoring pass
    prep = prep_offline = 0.0
    if name == SEQKD:
        labels, prep = teacher_labels(out / TEACHER / "final", "qwen2_vl", model_cfg("")["processor"],
                                      data / "train.jsonl", data / "train_teacher_answers.jsonl")
        run_sft(load_config(None, [], base=base_cfg(
            out / "student" / "final", run_dir, labels, data / "test.jsonl", steps, SFT_LR, seed=seed,
            time_budget_s=args.budget, eval_every=args.eval_every, warmup_steps=0)))
    else:
        train = data / "train.jsonl"
        if name == OFFLINE:
            train, prep_offline = offline_balanced(out, data)
        cfg = base_cfg(out / "student" / "final", run_dir, train, data / "test.jsonl", steps, OPD_LR, seed=seed,
                       prompts_per_step=16, warmup_steps=0, eval_every=args.eval_every, time_budget_s=args.budget)
        cfg["teacher"] = model_cfg(out / TEACHER / "final")
        cfg["algo"] = {"logratio_threshold": args.logratio_threshold}
        Trainer(load_config(None, ROWS[name], base=cfg)).train()
    return record(name, seed, read_metrics(run_dir / "metrics.jsonl"), info["student"], prep, prep_offline)


def record(name: str, seed: int, rows: list[dict], student: dict, prep: float, prep_offline: float) -> dict:
    """A run's result: (seconds, accuracy, blind-slice accuracy) curve, the teacher's pairwise inversion rate on the
    steps that had a mixed group (none for grpo: no teacher is called), steps and preparation seconds."""
    train = [r for r in rows if r["step"] > 0]
    curve = [(r.get("time/train_elapsed") or 0.0, r["eval/accuracy"], r.get("eval/slice/blind"))
             for r in rows if r.get("eval/accuracy") is not None]
    if not curve or rows[0]["step"] != 0:  # SFT does not evaluate before its first step: the student's start
        curve.insert(0, (0.0, student["accuracy"], student["blind"]))
    inversions = [r["margin/inversion_rate"] for r in train if r.get("margin/mixed_groups") and not name.startswith("grpo")]
    mixed = [r["margin/mixed_groups"] for r in train if r.get("margin/mixed_groups") is not None]
    return {"row": name, "seed": seed, "acc": curve[-1][1], "blind": curve[-1][2],
            "steps": train[-1]["step"] if train else 0, "label_seconds": prep, "offline_scoring_seconds": prep_offline,
            "inversion": sum(inversions) / len(inversions) if inversions else None,
            "mixed_groups": sum(mixed) / len(mixed) if mixed else None, "curve": curve}


def render(payload: dict) -> list[str]:
    """The table, from the stored payload alone; the speed column: the first training second at which the overall
    accuracy closes half the student's gap to the teacher (mean over the seeds that reach it)."""
    info, results = payload["info"], payload["results"]
    teacher, student = info[TEACHER], info["student"]
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Blind teacher: {teacher['accuracy']:.3f} overall, {teacher['blind']:.3f} on the blind slice; "
             f"student start {student['accuracy']:.3f} overall, {student['blind']:.3f} on the slice. "
             f"Budget {payload['settings']['budget']:.0f} s of training per row, seeds {seeds}, "
             f"{payload['cpu_count']} CPU cores, {payload['date']}. Means with 95% t-intervals over seeds.", "",
             "| row | accuracy | blind slice | per seed (overall / blind) | inversion rate (mean over training) | "
             "mixed groups per step | steps | s to half the gap |", "|---|---|---|---|---|---|---|---|"]
    half = student["accuracy"] + 0.5 * (teacher["accuracy"] - student["accuracy"])
    for name, rs in by_row(results).items():
        per_seed = " ; ".join(f"{r['acc']:.2f} / {r['blind']:.2f}" for r in rs if r["blind"] is not None)
        t_half = reach_cell([time_to(r["curve"], half) for r in rs if r.get("curve")])
        lines.append(f"| {name} | {cell([r['acc'] for r in rs])} | {cell([r['blind'] for r in rs])} | {per_seed} | "
                     f"{cell([r['inversion'] for r in rs])} | {cell([r.get('mixed_groups') for r in rs])} | "
                     f"{cell([r['steps'] for r in rs], '.0f')} | {t_half} |")
    return lines


def plot(payload: dict):
    """Both accuracies against training seconds (the first seed solid), and the bar chart at the budget."""
    fig, axes = figure(3, 17 / 3, 4.8)
    rows = by_row(payload["results"])
    for k, (name, rs) in enumerate(rows.items()):
        for j, r in enumerate(rs):
            for ax, col in zip(axes[:2], (1, 2)):
                pts = [(p[0], p[col]) for p in r["curve"] if p[col] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{k % 10}", alpha=0.9 if j == 0 else 0.35,
                            linewidth=1.2, label=name if j == 0 else None)
    for ax, title in zip(axes[:2], ("greedy test accuracy", "accuracy on the blind slice")):
        ax.set(title=title, xlabel="training seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    names = list(rows)
    for i, key in enumerate(("acc", "blind")):
        stats = [interval([r[key] for r in rows[n] if r[key] is not None] or [float("nan")]) for n in names]
        axes[2].bar([x + 0.4 * i for x in range(len(names))], [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats],
                    capsize=2, label="overall" if key == "acc" else "blind slice")
    axes[2].set_xticks([x + 0.2 for x in range(len(names))])
    axes[2].set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    axes[2].set_title("at the budget (95% intervals)")
    axes[2].legend(fontsize=7)
    return fig



def parse(argv=None):
    ap = grid_parser("blindspot", __doc__, Path("runs/blindspot"), ROWS, seeds="0,1,2,3,4")
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--teacher-steps", type=int, default=300)
    ap.add_argument("--student-steps", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--level", type=int, default=0, help="synthetic difficulty level")
    ap.add_argument("--overlap", action="store_true", help="let test questions repeat training ones (level 0 needs it)")
    ap.add_argument("--vision-lr-scale", type=float, default=0.0, help="of the teacher and student SFT")
    ap.add_argument("--logratio-threshold", type=float, default=None,
                    help="algo.logratio_threshold of every OPD row (default off: the near-certain SFT teacher gives the "
                         "student's wrong answers log ratios beyond 10, the tokens that carry the signal)")
    ap.add_argument("--quick", action="store_true", help="one seed, tiny data and 2 steps per row: a pipeline check")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_every = "0", 2, 2
        args.teacher_steps = args.student_steps = 2
        args.n_train, args.n_test = 48, 12
    if args.level == 0:
        args.overlap = True  # level 0 has a few hundred distinct questions: disjoint splits cannot be drawn
    args.rows = chosen_rows(ap, args.rows, ROWS)
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data, info = prepare(args)
    jobs = [(name, seed) for seed in seeds_of(args.seeds) for name in args.rows]
    return run_grid(args.out, jobs, lambda name, seed, run_dir: run_row(name, seed, run_dir, args, data, info),
                    lambda results: report(args.out, {"info": info, "settings": {"budget": args.budget},
                                                      "budget": args.budget, "results": results}, render, plot),
                    desc="blindspot", report_only=args.report_only)
