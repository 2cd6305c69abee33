"""Supervised fine-tuning on records of the sample schema, with the same engines and processors.

Used to make teachers (and weak students) from the tiny models and the synthetic task. The target
is the record's final assistant turn when it has one, else the text at ``sft.target``. Checkpoints
every ``train.save_every`` steps (the same atomic checkpoints as distillation; a rerun resumes from
the latest complete one with the same prompt order); the model lands in ``<output_dir>/final``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .algo.loss import aggregate
from .config import Config
from .data import (DataError, PromptSampler, RejectLog, Sample, StepPrompts, load_jsonl, load_test_records,
                   rank_file)
from .evaluate import evaluate
from .metrics import MetricsLogger
from .models import cache_frozen_vision, load_model, load_processor, response_logprobs
from .rollout import make_rollout_engine
from .training import make_training_engine
from .training.base import even_micro_batches, micro_batch_rows


def target_text(sample: Sample, path: str) -> tuple[Sample, str]:
    """(the sample as a prompt, the target); a final assistant turn is split off as the target."""
    last = sample.messages[-1]
    if last["role"] == "assistant":
        text = "".join(p.get("text", "") for p in last["content"])
        return Sample(**{**sample.__dict__, "messages": sample.messages[:-1]}), text
    node = sample.__dict__
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node:
        raise sample.error(DataError, f"no SFT target at {path!r} and no final assistant turn")
    return sample, node


def run_sft(cfg: Config) -> dict:
    if not cfg.data.train_path:
        raise ValueError("data.train_path: SFT reads one JSONL (data mixtures are for distillation)")
    out = Path(cfg.output_dir)
    engine = make_training_engine(cfg.train.engine, model_loader=lambda: load_model(cfg.student), train_cfg=cfg.train)
    cache_frozen_vision(engine.module, cfg.train.vision_cache, "student", partitioned=cfg.train.zero3)
    main = engine.rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    proc = load_processor(cfg.student)
    # rank 0 records the load-time rejects (every rank reads the whole file), each rank its own prompt-time ones
    rejects = RejectLog(rank_file(cfg.rejects_path, engine.rank))
    samples = load_jsonl(cfg.data.train_path, cfg.data.strict, rejects if main else RejectLog(None), cfg.data.verify_media)
    eos = proc.eos_token_ids[0]
    examples = []
    for s in samples:
        try:
            prompt_sample, text = target_text(s, cfg.sft.target)
            ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            examples.append((prompt_sample, ids))
        except DataError as err:
            if cfg.data.strict:
                raise
            rejects.add(err)
    prompts_of_step = StepPrompts([e[0] for e in examples], PromptSampler(len(examples), cfg.seed),
                                  proc.prompt_cache(cfg.train.prompt_cache, cfg.train.prompt_cache_bytes), rejects, cfg.data.strict,
                                  engine.rank, engine.world_size, all_reduce=engine.all_reduce)
    train_seconds = 0.0  # summed step times (evaluation excluded), for train.time_budget_s
    root, start = out / "checkpoints", 0
    found = ckpt.resume(engine, root) if cfg.train.resume else None
    if found is not None:
        last, state = found
        prompts_of_step.load_state(state)
        prompts_of_step.bad_keys.update(k for r in state.get("ranks", []) for k in r.get("bad_keys", []))
        start, train_seconds = state["step"], state["train_seconds"]
        if main:
            print(f"resumed from {last} at step {start}")
    logger = MetricsLogger(out, cfg.logging.tensorboard, False) if main else None
    if logger is not None:
        logger.truncate_after(start if found is not None else -1)
    rollout = make_rollout_engine("hf", model=engine.module, processor=proc, batch_size=cfg.rollout.batch_size)
    tests, reject_test_record = load_test_records(cfg.data, out, engine.rank, cfg.train.eval_samples) \
        if cfg.data.test_path and cfg.train.eval_every else ([], None)
    from tqdm import tqdm

    t0 = time.time()
    metrics: dict = {}
    for step in tqdm(range(start + 1, cfg.train.steps + 1), initial=start, total=cfg.train.steps, desc="sft",
                     disable=not (main and cfg.logging.progress)):
        _, kept, _, prompts = prompts_of_step.next(cfg.train.prompts_per_step)
        targets = [examples[i][1] for i in kept]
        chunks = even_micro_batches(len(prompts), cfg.train.micro_batch_size, engine)
        n_tok = engine.all_reduce(torch.tensor([float(sum(len(t) for t in targets))])).item()

        def nll(model, rows):
            take, counts = micro_batch_rows(rows)
            batch = proc.training_batch([prompts[r] for r in take], [targets[r] for r in take])
            lp = response_logprobs(model, batch, proc.suppressed_token_ids, 1.0, cfg.train.logprob_chunk)["logprobs"]
            mask = batch["response_mask"].to(lp.device) * (1.0 if counts else 0.0)
            return aggregate(-lp, mask, "token_mean", n_tok / engine.world_size), {}

        t_step = time.time()
        metrics = engine.train_step(chunks, nll)
        train_seconds += time.time() - t_step
        metrics["time/train_elapsed"] = train_seconds
        out_of_time = engine.budget_reached(train_seconds, cfg.train.time_budget_s)
        if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or out_of_time) and tests:
            with engine.rollout_context():
                metrics.update(evaluate(rollout, proc, tests, cfg.rollout.max_new_tokens, engine.all_reduce,
                                        engine.rank, engine.world_size, on_error=reject_test_record))
        metrics["time/elapsed"] = time.time() - t0
        if logger is not None:
            logger.log(step, metrics)
        if out_of_time:
            break
        if cfg.train.save_every > 0 and step % cfg.train.save_every == 0 and step < cfg.train.steps:
            ckpt.save(engine, root, step, {"step": step, **prompts_of_step.state(), "train_seconds": train_seconds,
                                           "world_size": engine.world_size}, cfg.train.keep_last,
                      rank_state={"bad_keys": sorted(prompts_of_step.bad_keys)})
    final, tmp = out / "final", out / ".tmp-final"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    engine.barrier()
    engine.export_hf(tmp, proc)
    if main:
        if final.exists():
            ckpt.retire(final)
        os.replace(tmp, final)
        if logger is not None:
            logger.close()
    engine.barrier()
    metrics["final"] = str(final)
    return metrics
