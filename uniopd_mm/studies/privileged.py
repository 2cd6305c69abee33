"""A teacher with privileged context, on real weights: SmolLM2-135M-Instruct distils what it does when told
something into itself when not told (teacher.context, teacher.path: student; uniopd_mm/teacher/context.py).

    python scripts/study.py privileged [--out runs/privileged --seeds 0,1,2 --budget 300]
    python scripts/study.py privileged --quick --out /tmp/pv     # every row's pipeline, a few steps

The teacher is the student's own starting weights, frozen, reading a prompt the student never sees:
- ``opd from the instruction``: the instruction INSTRUCTION after the question (an answer format the model follows
  when told; SmolLM2-135M ignores the same instructions as a system prompt: measured, docs/results.md); the
  student, prompted without it, should come to follow it anyway: measured as held-out compliance (the greedy
  response has the format) and accuracy, without the instruction;
- ``sft on the teacher's outputs``: the baseline: the teacher (with INSTRUCTION) answers every training prompt greedily
  and the student is fine-tuned on those answers (the labelling is a one-off preparation, reported, not charged);
- ``self-distillation from the worked solution``: the teacher reads the record's worked solution after the
  question (``user_suffix``); published work expects instance-specific hints to teach little (the student cannot
  see them), and this row reports what happens.
Every row gets the same seconds of training (--budget) per seed; the two-step arithmetic of the real-weights study
(its data and verifier). Writes results.md / results.json / curves.png under --out.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .harness import (by_row, chosen_rows, figure, greedy_accuracy, grid_parser, log, report, run_grid, seeds_of,
                      settings_dir, teacher_labels)
from .real_weights import ROOT, arithmetic_records, convert, smollm_arguments, write_jsonl
from .stats import cell, fmt, mean

INSTRUCTION = "\n\nStart your reply with 'The answer is'."
COMPLIES = re.compile(r"\s*The answer is\b.*", re.S)  # the response opens as instructed
HINT = "\n\nA worked solution: {meta.solution}"
TOLD, SFT, HINTED = "opd from the instruction", "sft on the teacher's outputs", "self-distillation from the worked solution"
ROWS = {TOLD: {"user_suffix": INSTRUCTION}, SFT: {"user_suffix": INSTRUCTION}, HINTED: {"user_suffix": HINT}}


def compliance(responses: list[str]) -> float:
    return sum(bool(COMPLIES.fullmatch(r)) for r in responses) / max(len(responses), 1)


def held_out(model: Path, args, out: Path, context: dict | None = None) -> dict:
    """Greedy held-out accuracy and compliance of ``model`` (with ``context``: as the privileged teacher reads)."""
    r = greedy_accuracy(model, args.out / "data" / "test.jsonl", args.max_new_tokens, out, context=context)
    return {"accuracy": r["accuracy"], "compliance": compliance(r["responses"]), "examples": r["examples"]}


def run_row(name: str, seed: int, run_dir: Path, args) -> dict:
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    data = args.out / "data"
    train = {"steps": args.steps or 10**6, "prompts_per_step": args.prompts, "micro_batch_size": args.prompts * args.n,
             "lr": args.lr, "warmup_steps": 0, "eval_every": 0, "save_every": 0, "keep_last": 1, "resume": False,
             "time_budget_s": args.budget}
    base = {"name": run_dir.name, "output_dir": str(run_dir), "seed": seed,
            "student": {"path": str(args.model), "family": "text"},
            "data": {"train_path": str(data / "train.jsonl"), "test_path": str(data / "test.jsonl")},
            "rollout": {"max_new_tokens": args.max_new_tokens}, "logging": {"tensorboard": False, "progress": False}}
    if name == SFT:
        labels, _ = teacher_labels(args.model, "text", None, data / "train.jsonl", data / "train_teacher_answers.jsonl",
                                   args.max_new_tokens, context=ROWS[SFT])
        run_sft(load_config(None, [], base={**base, "data": {**base["data"], "train_path": str(labels)},
                                            "train": {**train, "prompts_per_step": 16, "micro_batch_size": 16}}))
        final = run_dir / "final"
    else:
        Trainer(load_config(None, ["algo.preset=opd", "algo.logratio_threshold=null"] + args.set, base={
            **base, "teacher": {"path": "student", "family": "text", "context": ROWS[name], "share_prompts": True},
            "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "reuse_logprobs": True},
            "train": {**train, "share_prompts": True}})).train()
        final = sorted((run_dir / "checkpoints").glob("step_*"))[-1] / "hf"
    rows = read_metrics(run_dir / "metrics.jsonl")
    result = {"row": name, "seed": seed, **held_out(final, args, run_dir / "eval"),
              "steps": rows[-1]["step"] if rows else 0, "seconds": rows[-1].get("time/train_elapsed") if rows else 0,
              "reverse_kl_last": mean([r.get("opd/reverse_kl") for r in rows[-5:]]),
              "length_last": mean([r.get("response/length_mean") for r in rows[-5:]])}
    shutil.rmtree(run_dir / ("final" if name == SFT else "checkpoints"), ignore_errors=True)  # 0.5 GB each
    return result


def render(payload: dict) -> list[str]:
    info, s = payload["info"], payload["settings"]
    lines = [f"SmolLM2-135M-Instruct, its own frozen starting weights as the teacher; greedy on {s['n_test']} held-out "
             f"questions without the instruction or the solution. Start: compliance {info['student']['compliance']:.2f}, accuracy "
             f"{info['student']['accuracy']:.2f}; the teacher as it reads its context: with the instruction "
             f"compliance {info['teacher_told']['compliance']:.2f}, accuracy {info['teacher_told']['accuracy']:.2f}; "
             f"with the worked solution accuracy {info['teacher_hint']['accuracy']:.2f}. Instruction after the question: "
             f"{s['instruction']!r}; compliance: the response starts with 'The answer is'. Every row {s['budget']:.0f} s of training, "
             f"{s['prompts']} prompts x {s['n']} samples (OPD), lr {s['lr']:g}; seeds "
             f"{sorted({r['seed'] for r in payload['results']})}, {payload['cpu_count']} CPU cores, {payload['date']}. "
             "Means with 95% t-intervals over seeds.", "",
             "| row | held-out compliance | held-out accuracy | per seed (compliance / accuracy) | response tokens "
             "(last 5 steps) | steps |", "|---|---|---|---|---|---|"]
    for name, rs in by_row(payload["results"]).items():
        per_seed = " ; ".join(f"{r['compliance']:.2f} / {r['accuracy']:.2f}" for r in rs)
        lines.append(f"| {name} | {cell([r['compliance'] for r in rs])} | {cell([r['accuracy'] for r in rs])} | "
                     f"{per_seed} | {fmt(mean([r['length_last'] for r in rs]), '.1f')} | "
                     f"{cell([r['steps'] for r in rs], '.0f')} |")
    return lines


def plot(payload: dict):
    fig, (ax,) = figure(1, 7, 4.5)
    rows = by_row(payload["results"])
    for k, key in enumerate(("compliance", "accuracy")):
        xs = [x + 0.4 * k for x in range(len(rows))]
        stats = [(mean([r[key] for r in rs]), max(r[key] for r in rs) - min(r[key] for r in rs)) for rs in rows.values()]
        ax.bar(xs, [m for m, _ in stats], 0.4, label=key)
        for x, rs in zip(xs, rows.values()):
            ax.plot([x] * len(rs), [r[key] for r in rs], "k.", markersize=4)
    ax.axhline(payload["info"]["student"]["compliance"], ls="--", c="C0", lw=0.8, label="start compliance")
    ax.set_xticks([x + 0.2 for x in range(len(rows))])
    ax.set_xticklabels(list(rows), rotation=15, ha="right", fontsize=7)
    ax.set(title="held-out, no instruction (dots: seeds)", ylim=(0, 1))
    ax.legend(fontsize=7)
    return fig



def parse(argv=None):
    ap = grid_parser("privileged", __doc__, ROOT / "runs" / "privileged", ROWS, seeds="0,1,2", budget=300.0,
                     eval_every=None)
    smollm_arguments(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.n_train, args.n_test, args.seeds = 2, 32, 8, "0"
    args.rows = chosen_rows(ap, args.rows, ROWS)
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    convert(args.model)
    train, test = arithmetic_records(args.n_train, args.n_test, 0)
    write_jsonl(args.out / "data" / "train.jsonl", train)
    write_jsonl(args.out / "data" / "test.jsonl", test)
    log("held-out compliance and accuracy: the student, and the teacher with each context")
    info = {"student": held_out(args.model, args, args.out / "eval_student"),
            "teacher_told": held_out(args.model, args, args.out / "eval_teacher_told", ROWS[TOLD]),
            "teacher_hint": held_out(args.model, args, args.out / "eval_teacher_hint", {"user_suffix": HINT})}
    settings = {k: getattr(args, k) for k in ("n_test", "budget", "prompts", "n", "lr", "steps", "max_new_tokens", "set")}
    settings["instruction"] = INSTRUCTION
    grid = settings_dir(args.out, settings)
    log(f"runs and report under {grid}")
    jobs = [(name, seed) for seed in seeds_of(args.seeds) for name in args.rows]
    return run_grid(grid, jobs, lambda name, seed, run_dir: run_row(name, seed, run_dir, args),
                    lambda results: report(grid, {"info": info, "settings": settings, "results": results}, render, plot),
                    desc="privileged", report_only=args.report_only)
