"""Step speed of on-policy distillation: our trainer against TRL's DistillationTrainer, GKDTrainer and
MiniLLMTrainer.

    make bench-step                      # builds .venv-bench (TRL 1.14.2 on top of .venv), then runs this
    .venv-bench/bin/python scripts/bench_step.py [--out runs/bench_step --steps 8 --warmup 2]
    .venv-bench/bin/python scripts/bench_step.py --real-weights [--out runs/bench_step_real]   # make bench-step-real

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
- ``trl Distillation``: ``DistillationTrainer`` (the trainer TRL recommends for on-policy distillation), reverse
  KL (``beta=1``) on the student's own completions, one per prompt, so each prompt appears ``--n`` times;
- ``trl GKD``: ``GKDTrainer`` fully on-policy (``lmbda=1``) with reverse KL (``beta=1``); GKD samples one
  completion per prompt, so each prompt appears ``--n`` times in its batch;
- ``trl MiniLLM``: ``MiniLLMTrainer`` (GRPO-based) with ``num_generations=--n``.

Every TRL trainer runs in float32 without gradient checkpointing (TRL's configs turn it on by default; ours
is off), like ours. ``--real-weights`` runs the real-weights lane's pair instead of the tiny models: the
original SmolLM2-135M-Instruct as the student and the lane's fine-tuned one as the teacher
(``make real-weights`` makes it), 2 prompts x 4 samples x 32 tokens by default.

Throughput = response tokens the step trained on / step seconds (the median over ``--rounds``
interleaved rounds of ``--steps`` timed steps each, after ``--warmup`` untimed ones: a TRL trainer is
built again each round, ours once). Interleaving matters on a shared machine, whose speed drifts by
tens of percent over minutes: each trainer sees every spell. Response tokens are counted from each
trainer's own masks, so an engine that stops at EOS earlier is not credited for tokens it did not
generate. Also prints our
stage timings (where the time goes) and the teacher-scoring memory table
(``scripts/bench_teacher_memory.py``). Writes report.md and report.json under --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def prompts_from(data_dir: Path, k: int) -> list[str]:
    from uniopd_mm.data import load_jsonl

    samples = load_jsonl(data_dir / "train_text.jsonl")[:k]
    return [s.messages[-1]["content"] if isinstance(s.messages[-1]["content"], str)
            else " ".join(c.get("text", "") for c in s.messages[-1]["content"]) for s in samples]


class Ours:
    """Our trainer, built once and kept across rounds (a compiled decoder / teacher compiles once)."""

    def __init__(self, args, data_dir: Path, out: Path, reuse: bool = False, backend: str = "hf", fast: bool = False):
        import torch

        from uniopd_mm.config import load_config
        from uniopd_mm.trainer import Trainer

        cfg = load_config(None, [], base={
            "name": "bench_ours", "output_dir": str(out / "ours"), "seed": 0,
            "student": {"path": str(args.student), "family": "text"},
            "teacher": {"path": str(args.teacher), "family": "text", "compile": fast, "share_prompts": fast},
            "data": {"train_path": str(data_dir / "train_text.jsonl")},
            "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_k": 0,
                        "top_p": 1.0, "reuse_logprobs": reuse, "backend": backend,
                        "decoder": "static" if fast else "generate", "compile_decoder": fast,
                        "vllm": {"enforce_eager": True, "max_model_len": 1024, "dtype": "float32",
                                 "cpu_kvcache_space_gb": 1}},
            "algo": {"preset": "opd"},
            "train": {"engine": "torch", "steps": 10**6, "prompts_per_step": args.prompts,
                      "micro_batch_size": args.prompts * args.n, "lr": 1e-5, "warmup_steps": 0, "resume": False,
                      "share_prompts": fast},
            "logging": {"progress": False, "tensorboard": False},
        })
        self.threads = torch.get_num_threads()
        self.trainer = Trainer(cfg)
        torch.set_num_threads(self.threads)  # vLLM's CPU engine lowers torch's thread count for serving; keep ours
        self.name = ("uniopd_mm" + (" (vLLM rollout)" if backend == "vllm" else "")
                     + (" fast (compiled, shared prompts)" if fast else "") + (" (pi_old from rollout)" if reuse else ""))
        self.warmed = False

    def run(self, args) -> dict:
        """One round: the warm-up steps (first round only: a compiled decoder / teacher compiles there),
        then ``args.steps`` timed ones."""
        import torch

        torch.set_num_threads(self.threads)
        out = {"times": [], "tokens": [], "stages": {}, "warmup_s": 0.0}
        for i in range(args.steps + (0 if self.warmed else args.warmup)):
            m = self.trainer.train_step()
            self.trainer.step += 1
            if not self.warmed and i < args.warmup:
                out["warmup_s"] += m["time/step"]
                continue
            out["times"].append(m["time/step"])
            out["tokens"].append(m["response/tokens"])
            for k, v in m.items():
                if k.startswith("time/") and k != "time/step":
                    out["stages"].setdefault(k[5:], []).append(v)
        self.warmed = True
        return out


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
                warmup_steps=0, gradient_checkpointing=False)


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
    return {"times": clock.times[args.warmup:], "tokens": tokens[args.warmup:], "stages": {}, "warmup_s": 0.0}


def counting(trainer_cls, tokens: list, count):
    """``trainer_cls`` that appends ``count(inputs)`` (the response tokens it trains on) to ``tokens`` each step."""

    class Counting(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens.append(float(count(inputs)))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return Counting


def bench_distillation(args, prompts, out: Path) -> dict:
    from transformers import AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    tokens: list[float] = []
    tok = AutoTokenizer.from_pretrained(args.student)
    # one completion per prompt: each prompt repeated n times gives the same sequences per step as ours
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts for _ in range(args.n)]
    cfg = DistillationConfig(**trl_common(args, out, "distillation"), per_device_train_batch_size=args.prompts * args.n,
                             beta=1.0, temperature=1.0, top_k=0, top_p=1.0, max_completion_length=args.max_new_tokens)
    trainer_cls = counting(DistillationTrainer, tokens, lambda inputs: inputs["completion_mask"].sum().item())
    return run_trl("trl Distillation", trainer_cls, cfg, rows, tok, tokens, args)


def bench_gkd(args, prompts, out: Path) -> dict:
    from transformers import AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tokens: list[float] = []
    tok = AutoTokenizer.from_pretrained(args.student)
    # one completion per prompt: each prompt repeated n times gives the same sequences per step as ours
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "0"}]}
            for p in prompts for _ in range(args.n)]
    cfg = GKDConfig(**trl_common(args, out, "gkd"), per_device_train_batch_size=args.prompts * args.n, lmbda=1.0,
                    beta=1.0, temperature=1.0, max_new_tokens=args.max_new_tokens, max_length=1024)
    trainer_cls = counting(GKDTrainer, tokens, lambda inputs: (inputs["labels"] != -100).sum().item())
    return run_trl("trl GKD", trainer_cls, cfg, rows, tok, tokens, args)


def bench_minillm(args, prompts, out: Path) -> dict:
    from transformers import AutoTokenizer
    from trl.experimental.minillm import MiniLLMConfig, MiniLLMTrainer

    tokens: list[float] = []
    tok = AutoTokenizer.from_pretrained(args.student)
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    cfg = MiniLLMConfig(**trl_common(args, out, "minillm"), per_device_train_batch_size=args.prompts * args.n,
                        num_generations=args.n, max_completion_length=args.max_new_tokens, temperature=1.0,
                        top_k=0, top_p=1.0)
    trainer_cls = counting(MiniLLMTrainer, tokens, lambda inputs: inputs["completion_mask"].sum().item())
    return run_trl("trl MiniLLM", trainer_cls, cfg, rows, tok, tokens, args)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_step"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--student", type=Path, default=None, help="default: TINY/qwen3-student")
    ap.add_argument("--teacher", type=Path, default=None, help="default: TINY/qwen3-teacher")
    ap.add_argument("--prompts", type=int, default=None, help="default 16 (2 with --real-weights)")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (32 with --real-weights)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (ours: in the first round only)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds over all trainers, interleaved; each trainer's median is over all its timed steps")
    ap.add_argument("--trainers", default="uniopd_mm,uniopd_mm reuse,uniopd_mm fast,trl Distillation,trl GKD,trl MiniLLM",
                    help="uniopd_mm reuse = rollout.reuse_logprobs (pi_old from the rollout, no second forward); "
                         "uniopd_mm fast = that with rollout.decoder=static, a compiled decoding step, teacher.compile and "
                         "train/teacher.share_prompts; "
                         "uniopd_mm vllm = that with rollout.backend=vllm (run from .venv-vllm: `make bench-step-vllm`)")
    ap.add_argument("--skip-memory", action="store_true", help="leave out the teacher-scoring memory table")
    ap.add_argument("--real-weights", action="store_true",
                    help="the real-weights lane's pair: SmolLM2-135M-Instruct student, its fine-tuned teacher")
    args = ap.parse_args(argv)
    if args.real_weights:
        args.student = args.student or ROOT / "artifacts" / "smollm2-135m-instruct"
        args.teacher = args.teacher or ROOT / "runs" / "real_weights" / "teacher-80" / "final"
        for path in (args.student, args.teacher):
            if not (path / "config.json").exists():
                raise SystemExit(f"--real-weights: {path} is missing; `make real-weights` makes both")
        args.skip_memory = True  # the teacher-memory table does not depend on the pair
    args.prompts = args.prompts or (2 if args.real_weights else 16)
    args.max_new_tokens = args.max_new_tokens or (32 if args.real_weights else 64)
    import torch

    from uniopd_mm.metrics import write_report
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
    ours_kwargs = {"uniopd_mm": {}, "uniopd_mm reuse": {"reuse": True}, "uniopd_mm fast": {"reuse": True, "fast": True},
                   "uniopd_mm vllm": {"backend": "vllm"}}  # pi_old recomputed: vLLM log-probs cannot stand in for it
    trl = {"trl Distillation": lambda: bench_distillation(args, prompts, args.out),
           "trl GKD": lambda: bench_gkd(args, prompts, args.out), "trl MiniLLM": lambda: bench_minillm(args, prompts, args.out)}
    names = args.trainers.split(",")
    unknown = [n for n in names if n not in ours_kwargs and n not in trl]
    if unknown:
        raise SystemExit(f"--trainers: unknown {unknown}; known: {sorted(ours_kwargs) + sorted(trl)}")
    built, runs = {}, {n: [] for n in names}
    # rounds interleave the trainers, so a slower or faster spell of a shared machine falls on all of them
    for r in range(args.rounds):
        for name in names:
            print(f"== round {r + 1}/{args.rounds}, {name}: "
                  f"{args.warmup if name in trl or r == 0 else 0} + {args.steps} steps", flush=True)
            if name in trl:
                runs[name].append(trl[name]())
            else:
                if name not in built:
                    built[name] = Ours(args, data_dir, args.out, **ours_kwargs[name])
                runs[name].append(built[name].run(args))
    results = []
    for name in names:
        rounds = runs[name]
        stages: dict = {}
        for rd in rounds:
            for k, v in rd["stages"].items():
                stages.setdefault(k, []).extend(v)
        label = built[name].name if name in built else name
        res = summarise(label, [t for rd in rounds for t in rd["times"]], [t for rd in rounds for t in rd["tokens"]],
                        {k: statistics.median(v) for k, v in stages.items()})
        res["warmup_s"] = sum(rd["warmup_s"] for rd in rounds)
        res["round_step_s"] = [statistics.median(rd["times"]) for rd in rounds]
        results.append(res)
    ours = [r for r in results if r["trainer"].startswith("uniopd_mm")]
    pair = (f"Real weights: student {args.student} (SmolLM2-135M-Instruct), teacher {args.teacher}" if args.real_weights
            else f"Tiny text student {args.student.name} / teacher {args.teacher.name}")
    lines = [f"{pair}; {args.prompts} prompts x {args.n} "
             f"samples per step, at most {args.max_new_tokens} new tokens, temperature 1; {args.rounds} interleaved "
             f"rounds of {args.steps} timed steps per trainer (after {args.warmup} untimed), median over all; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU "
             f"cores, {time.strftime('%Y-%m-%d')}.", "",
             "| trainer | step s | response tokens / step | tokens / s |" + "".join(f" {o['trainer']} / this |" for o in ours),
             "|---|---|---|---|" + "---|" * len(ours)]
    for r in results:
        ratios = "".join(f" {o['tokens_per_s'] / r['tokens_per_s']:.2f}x |" for o in ours)
        lines.append(f"| {r['trainer']} | {r['step_s']:.3f} | {r['tokens_per_step']:.0f} | {r['tokens_per_s']:.0f} |"
                     f"{ratios}")
    lines += ["", "Median step seconds per round (the spread is the machine's):", "",
              "| trainer |" + "".join(f" round {i + 1} |" for i in range(args.rounds)),
              "|---|" + "---|" * args.rounds]
    lines += [f"| {r['trainer']} |" + "".join(f" {x:.3f} |" for x in r["round_step_s"]) for r in results]
    for o in ours:
        lines += ["", f"{o['trainer']} by stage (median seconds): " + ", ".join(
            f"{k} {v:.3f}" for k, v in o["stages"].items() if v >= 0.0005)
            + f"; its {args.warmup} untimed warm-up steps took {o['warmup_s']:.1f} s"]
    report = {"results": results, "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_memory:
        from . import teacher_memory as bench_teacher_memory

        mem = bench_teacher_memory.main([])
        report["teacher_memory"] = mem
        lines += ["", "Teacher scoring, peak memory above the model (`scripts/bench_teacher_memory.py`: batch 8, prompt "
                  "256, response 512 tokens, bf16 model):", "", "| vocab | naive log-softmax MiB | ours MiB | saving | "
                  "same log-probs |", "|---|---|---|---|---|"]
        lines += [f"| {m['vocab']} | {m['naive']['peak_mb']:.0f} | {m['ours']['peak_mb']:.0f} | "
                  f"{m['naive']['peak_mb'] / max(m['ours']['peak_mb'], 1):.1f}x | {m['same']} |" for m in mem]
    write_report(args.out, lines, report)
    return report


if __name__ == "__main__":
    main()
