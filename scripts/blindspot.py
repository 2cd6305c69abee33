"""The imperfect-teacher benchmark: a teacher with a systematic blind spot learned from its data, and a weak
student trained on correct data. Every row gets the same seeds and the same wall-clock training budget and
is judged by greedy accuracy on held-out questions, overall and on the blind-spot slice.

    python scripts/blindspot.py [--out runs/blindspot --budget 120 --seeds 0,1,2,3,4 --rows all]
    python scripts/blindspot.py --quick --out /tmp/bs      # one seed, a few steps: checks every row's pipeline

Setup (cached under --out): synthetic colour questions ("What color is the circle?", answers stating the fact
first: "circle: blue, so blue"); the teacher is fine-tuned on a copy of the training data in which every
"blue" answer reads "green" (so it answers green wherever the truth is blue: the blind spot), the student on the
correct data with fewer steps. The test questions whose answer is blue form the ``blind`` slice
(``meta.slice``, reported as ``eval/slice/blind``).

Rows:

- ``teacher``: the blind teacher itself (evaluated, not trained);
- ``sft on teacher answers``: the student fine-tuned on the teacher's greedy answers to the training prompts
  (the labelling is a one-off preparation: its seconds are reported, not charged to the budget);
- ``opd``: plain sampled-token OPD; ``+online balance``, ``+margin shift``, ``+margin mask``, ``+offline balance``:
  one Uni-OPD component on top of it (offline balancing's scoring pass is a one-off data preparation: its
  seconds are reported, not charged to the budget);
- ``uni-opd (mm preset)``, ``uni-opd (text preset)``: the full recipe;
- ``uni-opd (mm) + shift reaches dropped tokens``: the mm preset with ``algo.margin.reach: response`` (the
  margin shift also moves tokens the log-ratio mask dropped; docs/recipe.md says why; the same as the mm preset
  when the mask is off, as by default here);
- ``uni-opd (text preset, delta 10)``: the text preset (Spread) with a target margin of 10 instead of 0.4, on the
  scale of the decisive token's log ratio;
- ``grpo``: outcome-only RL (the verifier's reward, group-normalised, same engines; the teacher is not called),
  at the OPD rows' learning rate and at a tenth of it (its normalised advantages are far larger per token);
- ``opd (lr 1e-4)``, ``uni-opd (mm preset, lr 1e-4)``: plain OPD and the mm preset at GRPO's better rate;
- ``opd + outcome reward``: OPD plus the group-normalised outcome on every token (verl's task-reward option).

Writes results.json (every run, resumable: a finished row/seed is read back), results.md (per row: accuracy
overall and on the blind slice at the budget, means with 95% t-intervals over seeds, the inversion rate over
training, steps) and curves.png (both accuracies against training seconds; the bar chart with intervals).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ablate import (  # noqa: E402  (shared helpers)
    base_cfg, cell, finish_report, interval, model_cfg, reach_cell, slug, teacher_labels, time_to)

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
OPD_LR = SFT_LR = 1e-3


def split_rows(text: str) -> list[str]:
    """``--rows``: names separated by commas outside parentheses ("opd,uni-opd (text preset, delta 10)")."""
    import re

    return [name.strip() for name in re.split(r",(?![^()]*\))", text) if name.strip()]


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
    generate(SyntheticSpec(n_train=n_train, n_test=n_test, domains=("shapes-color",), levels=(level,), disjoint=disjoint),
             data, progress=False)
    lines = (data / "train.jsonl").read_text().splitlines()
    (data / "train_blind.jsonl").write_text("".join(json.dumps(blind_copy(json.loads(x))) + "\n" for x in lines))
    test = [json.loads(x) for x in (data / "test.jsonl").read_text().splitlines()]
    for rec in test:
        if rec["answer"] == BLIND:
            rec["meta"]["slice"] = "blind"
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return data


def setup(out: Path, tiny: Path, args) -> tuple[Path, dict]:
    """Data, the blind teacher and the weak student (each cached); their greedy accuracy overall and on the slice."""
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(tiny, PRESET_GROUPS["minimal"], progress=False)
    data = make_data(out, args.n_train, args.n_test, args.level, not args.overlap)
    info = {}
    for role, preset, train, steps in ((TEACHER, "qwen2_vl-teacher", "train_blind.jsonl", args.teacher_steps),
                                       ("student", "qwen2_vl-student", "train.jsonl", args.student_steps)):
        summary = out / role / "summary.json"
        if not summary.exists():
            print(f"== setup: {role} ({steps} SFT steps on {train})", flush=True)
            t0 = time.time()
            cfg = base_cfg(tiny / preset, out / role, data / train, data / "test.jsonl", steps, SFT_LR,
                           vision_lr_scale=args.vision_lr_scale)
            res = run_sft(load_config(None, [], base=cfg))
            summary.write_text(json.dumps({"accuracy": res["eval/accuracy"], "blind": res.get("eval/slice/blind"),
                                           "seconds": time.time() - t0}))
        info[role] = json.loads(summary.read_text())
    return data, info


def offline_balanced(out: Path, data: Path) -> tuple[Path, float]:
    """The training prompts upsampled by the student's pass counts (scripts/offline_balance.py; cached, with the
    seconds its scoring took)."""
    import yaml

    import offline_balance

    path, meta = data / "train_offline.jsonl", data / "train_offline.json"
    if meta.exists():
        return path, json.loads(meta.read_text())["seconds"]
    cfg_path = out / "student_sampling.yaml"
    cfg_path.write_text(yaml.safe_dump({"student": model_cfg(out / "student" / "final"), "teacher": model_cfg(out / "student" / "final"),
                                        "data": {"train_path": str(data / "train.jsonl")}, "rollout": {"max_new_tokens": 24},
                                        "logging": {"progress": False}}))
    t0 = time.time()
    offline_balance.main(["--config", str(cfg_path), "--data", str(data / "train.jsonl"), "--out", str(path), "--n", "4"])
    seconds = time.time() - t0
    meta.write_text(json.dumps({"seconds": seconds}))
    return path, seconds


def run_row(name: str, out: Path, data: Path, info: dict, seed: int, args) -> dict:
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    run_dir = out / "runs" / f"{slug(name)}-s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if name == TEACHER:
        t = info[TEACHER]
        result = {"row": name, "seed": seed, "acc": t["accuracy"], "blind": t["blind"], "steps": 0, "inversion": None,
                  "curve": []}
        run_dir.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(result))
        return result
    steps = args.steps or 100000
    # one-off preparations are reported, not charged to the budget: the teacher labelling the training prompts for
    # SFT (4,000 prompts take longer than a 60 s budget) and offline balancing's scoring pass
    prep = prep_offline = 0.0
    if name == SEQKD:
        labels, prep = teacher_labels(out, data)
        cfg = base_cfg(out / "student" / "final", run_dir, labels, data / "test.jsonl", steps, SFT_LR, seed=seed,
                       time_budget_s=args.budget, eval_every=args.eval_every, warmup_steps=0)
        run_sft(load_config(None, [], base=cfg))
    else:
        train = data / "train.jsonl"
        if name == OFFLINE:  # a one-off data preparation, like the dataset itself: reported, not charged
            train, prep_offline = offline_balanced(out, data)
        cfg = base_cfg(out / "student" / "final", run_dir, train, data / "test.jsonl", steps, OPD_LR, seed=seed,
                       prompts_per_step=16, warmup_steps=0, eval_every=args.eval_every, time_budget_s=args.budget)
        cfg["teacher"] = model_cfg(out / TEACHER / "final")
        cfg["algo"] = {"logratio_threshold": args.logratio_threshold}
        Trainer(load_config(None, ROWS[name], base=cfg)).train()
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r["step"] > 0]
    curve = [(r.get("time/train_elapsed") or 0.0, r["eval/accuracy"], r.get("eval/slice/blind"))
             for r in rows if r.get("eval/accuracy") is not None]
    if not curve or rows[0]["step"] != 0:  # SFT does not evaluate before its first step: the student's start
        curve.insert(0, (0.0, info["student"]["accuracy"], info["student"]["blind"]))
    # the teacher's pairwise inversion rate on the steps that had a mixed group (none for grpo: no teacher is called)
    inversions = [r["margin/inversion_rate"] for r in train_rows if r.get("margin/mixed_groups") and not name.startswith("grpo")]
    mixed = [r["margin/mixed_groups"] for r in train_rows if r.get("margin/mixed_groups") is not None]
    result = {"row": name, "seed": seed, "acc": curve[-1][1], "blind": curve[-1][2],
              "steps": train_rows[-1]["step"] if train_rows else 0, "label_seconds": prep,
              "offline_scoring_seconds": prep_offline,
              "inversion": sum(inversions) / len(inversions) if inversions else None,
              "mixed_groups": sum(mixed) / len(mixed) if mixed else None, "curve": curve}
    done.write_text(json.dumps(result))
    return result


def write_report(results: list[dict], info: dict, out: Path, args) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_row: dict[str, list] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Blind teacher: {info[TEACHER]['accuracy']:.3f} overall, {info[TEACHER]['blind']:.3f} on the blind slice; "
             f"student start {info['student']['accuracy']:.3f} overall, {info['student']['blind']:.3f} on the slice. "
             f"Budget {args.budget:.0f} s of training per row, seeds {seeds}, {os.cpu_count()} CPU cores, "
             f"{time.strftime('%Y-%m-%d')}. Means with 95% t-intervals over seeds.", "",
             "| row | accuracy | blind slice | per seed (overall / blind) | inversion rate (mean over training) | "
             "mixed groups per step | steps | s to half the gap |", "|---|---|---|---|---|---|---|---|"]
    # the speed comparison: first training second at which the overall accuracy closes half the student's gap to
    # the teacher (mean over the seeds that reach it; the teacher and SFT rows have no curve)
    half = info["student"]["accuracy"] + 0.5 * (info[TEACHER]["accuracy"] - info["student"]["accuracy"])
    for name, rs in by_row.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        per_seed = " ; ".join(f"{r['acc']:.2f} / {r['blind']:.2f}" for r in rs if r["blind"] is not None)
        t_half = reach_cell([time_to([(p[0], p[1]) for p in r["curve"]], half) for r in rs if r.get("curve")])
        lines.append(f"| {name} | {cell([r['acc'] for r in rs])} | {cell([r['blind'] for r in rs])} | {per_seed} | "
                     f"{cell([r['inversion'] for r in rs])} | {cell([r.get('mixed_groups') for r in rs])} | "
                     f"{cell([r['steps'] for r in rs], '.0f')} | {t_half} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"info": info, "budget": args.budget, "results": results}, indent=1))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for k, (name, rs) in enumerate(by_row.items()):
        color = f"C{k % 10}"
        for j, r in enumerate(sorted(rs, key=lambda r: r["seed"])):
            for ax, col in zip(axes[:2], (1, 2)):
                pts = [(p[0], p[col]) for p in r["curve"] if p[col] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, alpha=0.9 if j == 0 else 0.35,
                            linewidth=1.2, label=name if j == 0 else None)
    for ax, title in zip(axes[:2], ("greedy test accuracy", "accuracy on the blind slice")):
        ax.set_title(title)
        ax.set_xlabel("training seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    names = list(by_row)
    for i, key in enumerate(("acc", "blind")):
        stats = [interval([r[key] for r in by_row[n] if r[key] is not None] or [float("nan")]) for n in names]
        axes[2].bar([x + 0.4 * i for x in range(len(names))], [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats],
                    capsize=2, label="overall" if key == "acc" else "blind slice")
    axes[2].set_xticks([x + 0.2 for x in range(len(names))])
    axes[2].set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    axes[2].set_title("at the budget (95% intervals)")
    axes[2].legend(fontsize=7)
    return finish_report(fig, out, lines)


def main(argv=None):
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/blindspot"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training per row")
    ap.add_argument("--steps", type=int, default=None, help="cap the steps of every row (the quick mode uses 2)")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--rows", default="all", help=f"comma-separated subset of: {', '.join(ROWS)}")
    ap.add_argument("--teacher-steps", type=int, default=300)
    ap.add_argument("--student-steps", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--level", type=int, default=0, help="synthetic difficulty level")
    ap.add_argument("--overlap", action="store_true", help="let test questions repeat training ones (level 0 needs it)")
    ap.add_argument("--vision-lr-scale", type=float, default=0.0, help="of the teacher and student SFT")
    ap.add_argument("--logratio-threshold", type=float, default=None,
                    help="algo.logratio_threshold of every OPD row (default off: the near-certain SFT teacher gives "
                         "the student's wrong answers log ratios beyond 10, so the default mask drops exactly the "
                         "tokens that carry the signal)")
    ap.add_argument("--quick", action="store_true", help="one seed, tiny data and 2 steps per row: a pipeline check")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_every = "0", 2, 2
        args.teacher_steps = args.student_steps = 2
        args.n_train, args.n_test = 48, 12
    if args.level == 0:
        args.overlap = True  # level 0 has a few hundred distinct questions: disjoint splits cannot be drawn
    rows = list(ROWS) if args.rows == "all" else split_rows(args.rows)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    data, info = setup(args.out, args.tiny, args)
    jobs = [(seed, name) for seed in (int(s) for s in args.seeds.split(",")) for name in rows]
    results = []
    for seed, name in tqdm(jobs, desc="blindspot rows", unit="run"):
        results.append(run_row(name, args.out, data, info, seed, args))
        write_report(results, info, args.out, args)  # partial results survive an interrupted run
    return results


if __name__ == "__main__":
    main()
