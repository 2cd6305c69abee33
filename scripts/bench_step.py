"""Step speed of on-policy distillation: our trainer against TRL's GKDTrainer and MiniLLMTrainer.

    make bench-step                      # builds .venv-bench (TRL 1.14.2 on top of .venv), then runs this
    .venv-bench/bin/python scripts/bench_step.py [--out runs/bench_step --steps 8 --warmup 2]

One full step = rollout (the student samples), teacher scoring, and one optimiser update, on the
same tiny text student and teacher (the Qwen3-shaped ``qwen3-student`` / ``qwen3-teacher`` presets, or
``--student/--teacher`` paths), the same prompts (the synthetic text-arithmetic questions), the same
batch (``--prompts`` prompts x ``--n`` samples = sequences per step), the same response length cap
and the same sampling (temperature 1, top-k off, top-p 1), all in this one process:

- ``uniopd_mm``: ``Trainer.train_step`` with the torch engine and plain sampled-token OPD (rows: as is;
  ``reuse``: pi_old from the rollout; ``fast``: that plus ``rollout.decoder: static`` with a compiled
  step, ``teacher.compile`` (a compiled teacher backbone) and ``train.share_prompts`` /
  ``teacher.share_prompts`` (each prompt's forward once per group of ``--n`` samples), whose one-off
  compiles fall in the warm-up steps, reported apart);
- ``trl GKD``: ``GKDTrainer`` fully on-policy (``lmbda=1``) with reverse KL (``beta=1``); GKD samples one
  completion per prompt, so each prompt appears ``--n`` times in its batch;
- ``trl MiniLLM``: ``MiniLLMTrainer`` (GRPO-based) with ``num_generations=--n``.

Throughput = response tokens the step trained on / step seconds (the median of ``--steps`` timed steps
after ``--warmup`` untimed ones). Response tokens are counted from each trainer's own masks, so an
engine that stops at EOS earlier is not credited for tokens it did not generate. Also prints our
stage timings (where the time goes) and the teacher-scoring memory table
(``scripts/bench_teacher_memory.py``). Writes report.md and report.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def prompts_from(data_dir: Path, k: int) -> list[str]:
    from uniopd_mm.data import load_jsonl

    samples = load_jsonl(data_dir / "train_text.jsonl")[:k]
    return [s.messages[-1]["content"] if isinstance(s.messages[-1]["content"], str)
            else " ".join(c.get("text", "") for c in s.messages[-1]["content"]) for s in samples]


def bench_ours(args, data_dir: Path, out: Path, reuse: bool = False, backend: str = "hf", fast: bool = False) -> dict:
    import torch

    from uniopd_mm.config import load_config
    from uniopd_mm.trainer import Trainer

    cfg = load_config(None, [], base={
        "name": "bench_ours", "output_dir": str(out / "ours"), "seed": 0,
        "student": {"path": str(args.student), "family": "text"},
        "teacher": {"path": str(args.teacher), "family": "text", "compile": fast, "share_prompts": fast},
        "data": {"train_path": str(data_dir / "train_text.jsonl")},
        "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                    "reuse_logprobs": reuse, "backend": backend, "decoder": "static" if fast else "generate",
                    "compile_decoder": fast,
                    "vllm": {"enforce_eager": True, "max_model_len": 1024, "dtype": "float32", "cpu_kvcache_space_gb": 1}},
        "algo": {"preset": "opd"},
        "train": {"engine": "torch", "steps": args.warmup + args.steps, "prompts_per_step": args.prompts,
                  "micro_batch_size": args.prompts * args.n, "lr": 1e-5, "warmup_steps": 0, "resume": False,
                  "share_prompts": fast},
        "logging": {"progress": False, "tensorboard": False},
    })
    threads = torch.get_num_threads()
    trainer = Trainer(cfg)
    torch.set_num_threads(threads)  # vLLM's CPU engine lowers torch's thread count for serving; keep ours
    times, tokens, stages, warmup_s = [], [], {}, 0.0
    for i in range(args.warmup + args.steps):
        m = trainer.train_step()
        trainer.step += 1
        if i < args.warmup:
            warmup_s += m["time/step"]
        else:
            times.append(m["time/step"])
            tokens.append(m["response/tokens"])
            for k, v in m.items():
                if k.startswith("time/") and k != "time/step":
                    stages.setdefault(k[5:], []).append(v)
    name = ("uniopd_mm" + (" (vLLM rollout)" if backend == "vllm" else "") + (" fast (compiled, shared prompts)" if fast else "")
            + (" (pi_old from rollout)" if reuse else ""))
    result = summarise(name, times, tokens, {k: statistics.median(v) for k, v in stages.items()})
    result["warmup_s"] = warmup_s  # the untimed first steps (a compiled decoder compiles there)
    return result


def summarise(name, times, tokens, stages=None) -> dict:
    tps = [t / s for t, s in zip(tokens, times)]
    return {"trainer": name, "step_s": statistics.median(times), "tokens_per_step": statistics.median(tokens),
            "tokens_per_s": statistics.median(tps), "steps": len(times), "stages": stages or {}}


class StepClock:
    """A transformers TrainerCallback-compatible timer of each optimiser step."""

    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def make(self):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                clock._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                clock.times.append(time.perf_counter() - clock._t)

        return _CB()


def trl_common(args, out: Path, name: str) -> dict:
    return dict(output_dir=str(out / name), max_steps=args.warmup + args.steps, learning_rate=1e-5, use_cpu=True,
                report_to=[], save_strategy="no", logging_steps=10**6, dataloader_num_workers=0,
                gradient_accumulation_steps=1, disable_tqdm=True, bf16=False, seed=0, lr_scheduler_type="constant",
                warmup_steps=0)


def run_trl(name, trainer_cls, cfg, rows, tok, tokens, args) -> dict:
    """Trains a TRL trainer for warm-up + timed steps; ``tokens`` is filled by its compute_loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    clock = StepClock()
    torch.manual_seed(0)
    trainer = trainer_cls(model=AutoModelForCausalLM.from_pretrained(args.student),
                          teacher_model=AutoModelForCausalLM.from_pretrained(args.teacher), args=cfg,
                          train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[clock.make()])
    trainer.train()
    return summarise(name, clock.times[args.warmup:], tokens[args.warmup:])


def bench_gkd(args, prompts, out: Path) -> dict:
    from transformers import AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tokens: list[float] = []

    class CountingGKD(GKDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens.append(float((inputs["labels"] != -100).sum().item()))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    tok = AutoTokenizer.from_pretrained(args.student)
    # one completion per prompt: each prompt repeated n times gives the same sequences per step as ours
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "0"}]}
            for p in prompts for _ in range(args.n)]
    cfg = GKDConfig(**trl_common(args, out, "gkd"), per_device_train_batch_size=args.prompts * args.n, lmbda=1.0,
                    beta=1.0, temperature=1.0, max_new_tokens=args.max_new_tokens, max_length=1024)
    return run_trl("trl GKD", CountingGKD, cfg, rows, tok, tokens, args)


def bench_minillm(args, prompts, out: Path) -> dict:
    from transformers import AutoTokenizer
    from trl.experimental.minillm import MiniLLMConfig, MiniLLMTrainer

    tokens: list[float] = []

    class CountingMiniLLM(MiniLLMTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens.append(float(inputs["completion_mask"].sum().item()))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    tok = AutoTokenizer.from_pretrained(args.student)
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    cfg = MiniLLMConfig(**trl_common(args, out, "minillm"), per_device_train_batch_size=args.prompts * args.n,
                        num_generations=args.n, max_completion_length=args.max_new_tokens, temperature=1.0,
                        top_k=0, top_p=1.0)
    return run_trl("trl MiniLLM", CountingMiniLLM, cfg, rows, tok, tokens, args)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_step"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--student", type=Path, default=None, help="default: TINY/qwen3-student")
    ap.add_argument("--teacher", type=Path, default=None, help="default: TINY/qwen3-teacher")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--trainers", default="uniopd_mm,uniopd_mm reuse,uniopd_mm fast,trl GKD,trl MiniLLM",
                    help="uniopd_mm reuse = rollout.reuse_logprobs (pi_old from the rollout, no second forward); "
                         "uniopd_mm fast = that with rollout.decoder=static, a compiled decoding step, teacher.compile and "
                         "train/teacher.share_prompts; "
                         "uniopd_mm vllm = that with rollout.backend=vllm (run from .venv-vllm: `make bench-step-vllm`)")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the teacher-scoring memory table")
    args = ap.parse_args(argv)
    import torch

    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import make_tiny_models

    args.out.mkdir(parents=True, exist_ok=True)
    if args.student is None or args.teacher is None:
        make_tiny_models(args.tiny, ["qwen3-student", "qwen3-teacher"], progress=False)
        args.student = args.student or args.tiny / "qwen3-student"
        args.teacher = args.teacher or args.tiny / "qwen3-teacher"
    data_dir = args.out / "data"
    if not (data_dir / "train_text.jsonl").exists():
        generate(SyntheticSpec(n_train=max(64, args.prompts * 4), n_test=4, domains=("text-arith",), levels=(1,)),
                 data_dir, progress=False)
    prompts = prompts_from(data_dir, 10**6)
    runners = {"uniopd_mm": lambda: bench_ours(args, data_dir, args.out),
               "uniopd_mm reuse": lambda: bench_ours(args, data_dir, args.out, reuse=True),
               "uniopd_mm fast": lambda: bench_ours(args, data_dir, args.out, reuse=True, fast=True),
               "uniopd_mm vllm": lambda: bench_ours(args, data_dir, args.out, reuse=True, backend="vllm"),
               "trl GKD": lambda: bench_gkd(args, prompts, args.out),
               "trl MiniLLM": lambda: bench_minillm(args, prompts, args.out)}
    results = []
    for name in args.trainers.split(","):
        print(f"== {name}: {args.warmup} + {args.steps} steps", flush=True)
        results.append(runners[name]())
    ours = [r for r in results if r["trainer"].startswith("uniopd_mm")]
    lines = [f"Tiny text student {args.student.name} / teacher {args.teacher.name}; {args.prompts} prompts x {args.n} "
             f"samples per step, at most {args.max_new_tokens} new tokens, temperature 1; median of {args.steps} steps "
             f"after {args.warmup}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU "
             f"cores, {time.strftime('%Y-%m-%d')}.", "",
             "| trainer | step s | response tokens / step | tokens / s |" + "".join(f" {o['trainer']} / this |" for o in ours),
             "|---|---|---|---|" + "---|" * len(ours)]
    for r in results:
        ratios = "".join(f" {o['tokens_per_s'] / r['tokens_per_s']:.2f}x |" for o in ours)
        lines.append(f"| {r['trainer']} | {r['step_s']:.3f} | {r['tokens_per_step']:.0f} | {r['tokens_per_s']:.0f} |"
                     f"{ratios}")
    for o in ours:
        lines += ["", f"{o['trainer']} by stage (median seconds): " + ", ".join(
            f"{k} {v:.3f}" for k, v in o["stages"].items() if v >= 0.0005)
            + f"; its {args.warmup} untimed warm-up steps took {o['warmup_s']:.1f} s"]
    report = {"results": results, "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_memory:
        import bench_teacher_memory

        mem = bench_teacher_memory.main([])
        report["teacher_memory"] = mem
        lines += ["", "Teacher scoring, peak memory above the model (`scripts/bench_teacher_memory.py`: batch 8, prompt "
                  "256, response 512 tokens, bf16 model):", "", "| vocab | naive log-softmax MiB | ours MiB | saving | "
                  "same log-probs |", "|---|---|---|---|---|"]
        lines += [f"| {m['vocab']} | {m['naive']['peak_mb']:.0f} | {m['ours']['peak_mb']:.0f} | "
                  f"{m['naive']['peak_mb'] / max(m['ours']['peak_mb'], 1):.1f}x | {m['same']} |" for m in mem]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
