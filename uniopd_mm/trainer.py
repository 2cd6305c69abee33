"""The on-policy distillation trainer: one step is seven named, timed stages.

    1. rollout         the student samples G responses per prompt
    2. verify          outcome verifiers mark each response correct / incorrect / unknown
    3. old logprobs    the training engine recomputes the student's token log-probs
    4. teacher scores  the teacher scores the same tokens under its own prompt
    5. advantages      r_t, masks (algo/)
    6. update          micro-batches: forward, loss (algo/), backward, one optimiser step
    7. sync            push the new weights to the rollout engine (a no-op for HF rollouts)

Prompts are drawn by a seeded sampler (the same order on every rank) and sharded across ranks.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .algo.advantages import compute_advantages
from .algo.opd import logratio_mask, teacher_failure_mask
from .algo.xtok import chunk_reward_logprobs
from .config import Config, ConfigError
from .data import (DataError, RejectLog, StepPrompts, data_error_names, load_test_records,
                   load_training_data, rank_file)
from .evaluate import evaluate
from .metrics import (MetricsLogger, Timer, pad_rows, per_teacher_metrics, rejects_metrics, rollout_sums,
                      step_metrics)
from .models import cache_frozen_vision, eval_mode, load_model, load_processor, model_device, response_logprobs
from .objective import global_normalizer, micro_batch_loss
from .rollout import SamplingParams, make_rollout_engine
from .teacher import TeacherScores
from .teacher.routing import record_failures, score_routed, teacher_from_config
from .training import make_training_engine
from .training.failures import PEER_LOST, StageOutOfMemory, oom_message
from .training.base import even_micro_batches, gather_rows, micro_batch_rows
from .verifiers import unverifiable_warning, verify


@dataclass
class Rollouts:
    """One step's rollouts on this rank, row i = response i: its record, encoded prompt, group (the prompt's
    position in the step), routed teacher, and the step's micro-batches."""
    samples: list
    prompts: list
    group_ids: torch.Tensor  # [B]
    routes: list[str]
    response_mask: torch.Tensor  # [B, T]
    micro_batches: list[list[int]]


class Trainer:
    def __init__(self, cfg: Config):
        if not cfg.teacher_registry:
            raise ConfigError("teacher: required for distillation (or the named 'teachers')")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.timer = Timer()
        self.engine = make_training_engine(cfg.train.engine, model_loader=lambda: load_model(cfg.student),
                                           train_cfg=cfg.train)
        self.rank, self.world = self.engine.rank, self.engine.world_size
        if cfg.train.prompts_per_step < self.world:
            raise ConfigError(f"train.prompts_per_step={cfg.train.prompts_per_step} is fewer than the {self.world} "
                              "processes: every rank needs at least one prompt a step")
        cache_frozen_vision(self.engine.module, cfg.train.vision_cache, "student", partitioned=cfg.train.zero3,
                            max_bytes=cfg.train.vision_cache_bytes)
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.engine.barrier()
        self.rejects = RejectLog(rank_file(cfg.rejects_path, self.rank))
        # every rank reads the whole data (same order); only rank 0 records the rejects
        self.samples, sampler = load_training_data(cfg.data, cfg.seed, self.rejects if self.is_main else
                                                        RejectLog(None), self.is_main and cfg.logging.progress)
        a = cfg.algo
        if self.is_main and (a.balance.enabled or a.margin.shift or a.margin.mask):
            message = unverifiable_warning(self.samples)
            if message:
                warnings.warn(message, stacklevel=2)
        self.test_samples = []
        if cfg.data.test_path and cfg.train.eval_every:
            # test records that fail to load, or whose prompt fails to build, go to rejects_test.jsonl
            self.test_samples, self.reject_test_record = load_test_records(cfg.data, self.out, self.rank,
                                                                           cfg.train.eval_samples)
            log = self.reject_test_record.log
            if log.total and self.is_main:
                print(f"{log.total} test records rejected: see {log.path}")
        self.student_proc = load_processor(cfg.student)
        self.suppressed = self.student_proc.suppressed_token_ids
        # one cache of encoded prompts for the student and every local teacher that renders prompts alike
        # the sized images / frames stay only where a vLLM engine reads the prompts
        self.student_proc.keep_media = cfg.rollout.backend == "vllm"
        prompt_cache = self.student_proc.prompt_cache(cfg.train.prompt_cache, cfg.train.prompt_cache_bytes)
        # teachers are loaded once; each prompt is scored by exactly one of them
        self.teachers = {name: teacher_from_config(name, t, cfg, self.student_proc, prompt_cache, self.world)
                         for name, t in cfg.teacher_registry.items()}
        self.ref_model = None
        if cfg.algo.kl_coef > 0:
            self.ref_model = load_model(cfg.student, device=str(model_device(self.engine.module)), frozen=True)
        if cfg.rollout.backend == "vllm":
            self.rollout = make_rollout_engine("vllm", model_path=cfg.student.path, processor=self.student_proc,
                                               seed=cfg.seed * 1000 + self.rank, world_size=self.world,
                                               **cfg.rollout.vllm.engine_kwargs())
        else:
            self.rollout = make_rollout_engine(cfg.rollout.backend, model=self.engine.module,
                                               processor=self.student_proc, batch_size=cfg.rollout.batch_size,
                                               decoder=cfg.rollout.decoder, compile_decoder=cfg.rollout.compile_decoder)
        r = cfg.rollout
        self.sampling = SamplingParams(n=r.n - r.teacher_share, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                       max_new_tokens=r.max_new_tokens)
        self.teacher_rollout = None
        if r.teacher_share:  # the teacher samples part of each group (config: one local HF teacher, shared vocabulary)
            (teacher,) = self.teachers.values()
            if not teacher.shared_vocab:
                raise ConfigError("rollout.teacher_share: the teacher's vocabulary is not the student's")
            self.teacher_rollout = make_rollout_engine("hf", model=teacher.model, processor=teacher.processor,
                                                       batch_size=r.batch_size)
        self.prompts = StepPrompts(self.samples, sampler, prompt_cache, self.rejects, cfg.data.strict, self.rank,
                                   self.world, check=self.teacher_of, all_reduce=self.engine.all_reduce)
        if cfg.train.preflight:  # every rank, the same records: all stop together
            from . import preflight

            lines = preflight.run(self.teachers, self.teacher_of, self.student_proc, self.samples, self.out)
            if self.is_main and cfg.logging.progress:
                print("preflight: " + "; ".join(lines))
        self.step = 0
        self.step_batches: dict[tuple, dict] = {}  # this step's collated text micro-batches (student_batch)
        self.logger = None
        if self.is_main:
            self.logger = MetricsLogger(self.out, cfg.logging.tensorboard, cfg.logging.wandb,
                                        cfg.logging.wandb_project, cfg.name, asdict(cfg))
            (self.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self.train_seconds = 0.0  # summed step times (evaluation and saving excluded), saved in checkpoints
        self.seen_ids: list[list[str]] = []  # prompt ids of each step, for audits and resume tests
        resumed = cfg.train.resume and self.try_resume()
        if resumed:  # an engine with its own copy of the weights (vLLM) loaded the checkpoint's start, not these
            self.rollout.sync_weights(self.engine.weights_for_sync())
        if self.logger is not None:
            # a fresh start begins a fresh log; a resume drops rows a killed run wrote after its checkpoint
            self.logger.truncate_after(self.step if resumed else -1)

    # -- data and prompts ---------------------------------------------------------------------
    def teacher_of(self, sample) -> str:
        names = list(self.teachers)
        name = sample.teacher or self.cfg.data.default_teacher or (names[0] if len(names) == 1 else None)
        if name not in self.teachers:
            raise sample.error(DataError, f"record routes to teacher {name!r}, not one of {names}")
        return name

    def next_prompts(self):
        """This rank's records, encoded prompts and their positions in the step (the group ids)."""
        drawn, kept, positions, prompts = self.prompts.next(self.cfg.train.prompts_per_step)
        self.seen_ids.append([self.samples[i].id for i in drawn])
        return [self.samples[i] for i in kept], prompts, positions

    # -- the step: seven stages, each one call -------------------------------------------------
    def train_step(self) -> dict[str, float]:
        t, t_step = self.stage, time.perf_counter()
        self.step_batches.clear()
        samples, prompts, prompt_groups = self.next_prompts()
        with t("rollout"), self.engine.rollout_context():
            ro = self.rollout.generate(prompts, self.sampling)
            if self.teacher_rollout is not None:
                ro = self.with_teacher_samples(ro, samples)
        self.rollout.sleep()  # a vLLM engine with sleep mode frees its memory until the sync
        rollouts = self.rollouts_of(ro, samples, prompts, prompt_groups)
        with t("verify"):
            outcomes = [verify(s, self.student_proc.decode(r)) for s, r in zip(rollouts.samples, ro.responses)]
        with t("old_logprobs"), torch.no_grad(), eval_mode(self.engine.module):
            old_logprobs, ref_logprobs = self.old_logprobs(rollouts, ro)
        with t("teacher"):
            scores = self.teacher_scores(rollouts, ro.responses, old_logprobs)
        with t("advantages"):
            advantages, loss_mask, metrics = self.advantages(rollouts, ro, outcomes, old_logprobs, scores)
        every = self.cfg.logging.samples_every
        if every and (self.step + 1) % every == 0 and self.is_main:
            self.write_samples(rollouts, ro, outcomes, old_logprobs, scores.logprobs, loss_mask)
        with t("update"):
            metrics.update(self.update(rollouts, ro.responses, old_logprobs, ref_logprobs, advantages, loss_mask, scores))
        with t("sync"):
            self.rollout.wake_up()
            self.rollout.sync_weights(self.engine.weights_for_sync())  # a no-op for the HF engine (shared module)
        metrics.update({**self.timer.pop(), **self.data_metrics()})
        metrics["time/step"] = step_time = time.perf_counter() - t_step
        if torch.cuda.is_available():
            metrics["memory/peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        metrics["throughput/tokens_per_s"] = metrics["response/tokens"] / max(step_time, 1e-9)
        return metrics

    def with_teacher_samples(self, ro, samples):
        """The step's rollouts with rollout.teacher_share of each group sampled by the teacher, from its own prompt,
        at the rollout temperature (prompt-major, ``from_teacher`` marking them)."""
        from dataclasses import replace

        from .rollout import merge_prompt_major

        (teacher,) = self.teachers.values()
        params = replace(self.sampling, n=self.cfg.rollout.teacher_share, logprobs=False)
        return merge_prompt_major(ro, self.teacher_rollout.generate([teacher.encode(s) for s in samples], params))

    def write_samples(self, rollouts: Rollouts, ro, outcomes, old_logprobs, teacher_logprobs, loss_mask) -> None:
        """A few of this step's rollouts to samples.jsonl, token by token with their rewards (where the signal sits:
        a stop clause never sampled, a loop the teacher endorses)."""
        decode = self.student_proc.tokenizer.decode
        with open(self.out / "samples.jsonl", "a") as f:
            for i in range(min(self.cfg.logging.samples_per_step, len(ro.responses))):
                ids = ro.responses[i]
                f.write(json.dumps({
                    "step": self.step + 1, "id": rollouts.samples[i].id, "text": self.student_proc.decode(ids),
                    "finished": bool(ro.finished[i]), "correct": outcomes[i],
                    "tokens": [decode([t]) for t in ids],
                    "reward": [round(float(x), 3) for x in (teacher_logprobs[i] - old_logprobs[i])[: len(ids)]],
                    "counted": [int(x) for x in loss_mask[i, : len(ids)]]}) + "\n")

    def rollouts_of(self, ro, samples, prompts, prompt_groups) -> Rollouts:
        """The step's rollouts with their records, prompts, groups, teachers and micro-batches."""
        n = len(ro.responses)
        return Rollouts(samples=[samples[i] for i in ro.prompt_index], prompts=[prompts[i] for i in ro.prompt_index],
                        group_ids=torch.tensor([prompt_groups[i] for i in ro.prompt_index]),
                        routes=[self.teacher_of(samples[i]) for i in ro.prompt_index],
                        response_mask=pad_rows([[1.0] * len(r) for r in ro.responses]),
                        micro_batches=even_micro_batches(n, self.cfg.train.micro_batch_size, self.engine))

    def student_batch(self, prompts, responses, rows):
        """The collated micro-batch ``rows`` of this step. A text-only one is kept for the step, so pi_old and the
        update collate it once; one with pixels is built each time (it would hold its rows' pixels twice)."""
        key = tuple(rows)
        cached = self.step_batches.get(key)
        if cached is not None:
            return cached
        take, _ = micro_batch_rows(rows)
        batch = self.student_proc.training_batch([prompts[r] for r in take], [responses[r] for r in take])
        if not any(k.startswith("pixel_values") for k in batch):
            self.step_batches[key] = batch
        return batch

    def old_logprobs(self, rollouts: Rollouts, ro):
        """Stage 3: pi_old of every response token (the rollout engine's own with rollout.reuse_logprobs) and the
        KL reference model's (None without algo.kl_coef), both [B, T]."""
        cfg, mask = self.cfg, rollouts.response_mask
        reuse = cfg.rollout.reuse_logprobs
        old_logprobs = pad_rows(ro.logprobs)[:, : mask.shape[1]] * mask if reuse else torch.zeros_like(mask)
        ref_logprobs = torch.zeros_like(mask) if self.ref_model is not None else None
        models = [] if reuse else [(self.engine.forward_model, old_logprobs)]
        models += [(self.ref_model, ref_logprobs)] if ref_logprobs is not None else []
        for rows in rollouts.micro_batches if models else []:
            take, counts = micro_batch_rows(rows)
            batch = self.student_batch(rollouts.prompts, ro.responses, rows)
            for model, out in models:
                if counts or model is not self.ref_model:  # the student's forward runs on every rank (ZeRO-3)
                    lp = response_logprobs(model, batch, self.suppressed, cfg.rollout.temperature,
                                           cfg.train.logprob_chunk, share_prompts=cfg.train.share_prompts)["logprobs"]
                    if counts:
                        out[take, : lp.shape[1]] = lp[: len(take)].cpu() * batch["response_mask"][: len(take)]
        return old_logprobs, ref_logprobs

    def teacher_scores(self, rollouts: Rollouts, responses, old_logprobs) -> TeacherScores:
        """Stage 4: each rollout scored by its prompt's teacher; a cross-tokenizer teacher's chunk signal on every
        token of the chunk; no teacher call for outcome-only GRPO or the constant control (log ratio 0 everywhere)."""
        n = len(responses)
        if not self.cfg.algo.runs_teacher:
            return TeacherScores(old_logprobs.clone(), torch.zeros(n, dtype=torch.bool), [None] * n,
                                 token_mask=torch.ones_like(old_logprobs))
        scores = self.score_by_teacher(rollouts.samples, responses, rollouts.routes, old_logprobs.shape[1])
        if scores.chunks is not None:
            scores.logprobs = chunk_reward_logprobs(scores.logprobs, old_logprobs, scores.chunks)
        return scores

    def advantages(self, rollouts: Rollouts, ro, outcomes, old_logprobs, scores: TeacherScores):
        """Stage 5: the masks (teacher failures, log ratio), then balancing and margin calibration over every rank's
        rollouts. Returns (advantages, loss mask, the step's rollout / teacher / calibration metrics)."""
        teacher_logprobs, response_mask = scores.logprobs, rollouts.response_mask
        ok = teacher_failure_mask(teacher_logprobs, response_mask, scores.failed)
        record_failures(rank_file(self.out / "teacher_failures.jsonl", self.rank), self.step + 1, rollouts.samples,
                        rollouts.routes, scores, ok)
        ratio_keep = logratio_mask(old_logprobs, teacher_logprobs, self.cfg.algo.logratio_threshold)
        scored = response_mask * ok[:, None] * scores.token_mask
        if self.cfg.algo.truncated == "drop":  # responses cut at the cap leave the loss
            scored = scored * torch.tensor([float(f) for f in ro.finished])[:, None]
        correct = torch.tensor([1 if c is True else 0 if c is False else -1 for c in outcomes])
        names = list(self.teachers)
        teacher_ids = torch.tensor([names.index(r) for r in rollouts.routes]) if len(names) > 1 else None
        advantages, loss_mask, metrics = self.calibrate(teacher_logprobs, old_logprobs, scored * ratio_keep, correct,
                                                        rollouts.group_ids, teacher_ids, scored * (1 - ratio_keep))
        sums = rollout_sums(ro, old_logprobs, teacher_logprobs, response_mask, loss_mask, ok, outcomes, ratio_keep)
        metrics.update(step_metrics(sums, self.engine.all_reduce, with_mismatch=not self.cfg.rollout.reuse_logprobs,
                                    with_teacher=self.cfg.algo.runs_teacher))
        metrics.update(per_teacher_metrics(names, rollouts.routes, old_logprobs, teacher_logprobs, loss_mask, ok,
                                           self.engine.all_reduce))
        return advantages, loss_mask, metrics

    def update(self, rollouts: Rollouts, responses, old_logprobs, ref_logprobs, advantages, loss_mask, scores):
        """Stage 6: micro-batches through the training engine (forward, loss, backward), one optimiser step."""
        cfg = self.cfg
        normalizer = global_normalizer(loss_mask, cfg.algo.aggregation, self.engine.all_reduce, self.world)
        targets = {"old_logprobs": old_logprobs, "advantages": advantages, "loss_mask": loss_mask,
                   "ref_logprobs": ref_logprobs, "full_logprobs": scores.full_logprobs, "topk_ids": scores.topk_ids,
                   "topk_logprobs": scores.topk_logprobs}

        def loss(model, rows):
            return self.loss(model, rollouts.prompts, responses, rows, targets, normalizer)

        return self.engine.train_step(rollouts.micro_batches, loss)

    def loss(self, model, prompts, responses, rows, targets, normalizer):
        """One micro-batch's (loss, metrics): the student's forward and the algo/ loss (objective.py)."""
        cfg = self.cfg
        take, counts = micro_batch_rows(rows)
        return micro_batch_loss(model, self.student_batch(prompts, responses, rows), take, counts, targets, cfg.algo,
                                temperature=cfg.rollout.temperature, logprob_chunk=cfg.train.logprob_chunk,
                                share_prompts=cfg.train.share_prompts, suppressed_ids=self.suppressed,
                                normalizer=normalizer)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Times stage ``name``; a CUDA out-of-memory error in it stops the run with what to lower.

        NOTE: nothing is saved on the way out: the last complete checkpoint stays the one a resume loads.
        """
        with self.timer(name):
            try:
                yield
            except torch.cuda.OutOfMemoryError as e:
                raise StageOutOfMemory(oom_message(name, self.rank, self.step + 1, self.out / "checkpoints", e)) from e

    def data_metrics(self) -> dict[str, float]:
        """Records rejected so far (load time: rank 0's; encoding: each rank's) and prompts truncated."""
        teacher_cut = sum(len(getattr(getattr(t, "processor", None), "truncated", ())) for t in self.teachers.values())
        return rejects_metrics(self.rejects.counts, sorted(data_error_names()), len(self.student_proc.truncated), teacher_cut,
                               self.engine.all_reduce)

    def score_by_teacher(self, samples, responses, routes, width) -> TeacherScores:
        a = self.cfg.algo
        topk = a.topk if a.loss != "pg" and a.distill_support == "topk" else 0
        return score_routed(self.teachers, samples, responses, routes, width, topk,
                            full=a.loss != "pg" and a.distill_support == "full")

    def calibrate(self, teacher_logprobs, old_logprobs, loss_mask, correct, group_ids, teacher_ids=None,
                  ratio_dropped=None):
        """Stage 5 on every rank's rollouts (gathered by the engine; algo/advantages.py), this rank's rows back.
        Returns (advantages, loss mask, metrics)."""
        width = loss_mask.shape[1]
        if self.cfg.algo.margin.reach != "response":
            ratio_dropped = None  # only the shift's reach over dropped tokens reads it
        (teacher_all, old_all, mask, correct_all, groups, ids, dropped), rows = gather_rows(
            self.engine, [teacher_logprobs, old_logprobs, loss_mask, correct, group_ids, teacher_ids, ratio_dropped])
        advantages, mask, metrics = compute_advantages(
            teacher_all, old_all, mask, correct_all, groups, self.cfg.algo,
            generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step),
            teacher_ids=ids, teacher_names=list(self.teachers) if ids is not None else None, ratio_dropped=dropped)
        return advantages[rows, :width], mask[rows, :width], metrics

    # -- evaluation, checkpoints, the loop ------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if not self.test_samples:
            return {}
        with self.stage("eval"), self.engine.rollout_context():
            return evaluate(self.rollout, self.student_proc, self.test_samples, self.cfg.rollout.max_new_tokens,
                            all_reduce=self.engine.all_reduce, rank=self.rank, world_size=self.world,
                            on_error=self.reject_test_record)

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, **self.prompts.state(),
                 "seen_ids": self.seen_ids, "world_size": self.world, "train_seconds": self.train_seconds}
        # each rank's rejected records and its rollout engine's seed counter (a vLLM engine's)
        rank_state = {"bad_keys": self.prompts.state()["bad_keys"], "rollout": self.rollout.state()}
        return ckpt.save(self.engine, self.out / "checkpoints", self.step, state, self.cfg.train.keep_last,
                         self.student_proc, rank_state)

    def try_resume(self) -> bool:
        found = ckpt.resume(self.engine, self.out / "checkpoints")
        if found is None:
            return False
        last, state = found
        self.prompts.load_state(state)
        ranks = state.get("ranks", [])
        # a record rejected on any rank is rejected on all (after a resume it may be drawn for another rank)
        self.prompts.bad_keys.update(k for r in ranks for k in r.get("bad_keys", []))
        if self.rank < len(ranks):
            self.rollout.load_state(ranks[self.rank].get("rollout", {}))
        self.seen_ids = state["seen_ids"]
        self.step = state["step"]
        self.train_seconds = state.get("train_seconds", 0.0)
        if self.is_main:
            print(f"resumed from {last} at step {self.step}")
        return True

    def train(self) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg.train
        last: dict[str, float] = {}
        if self.step == 0 and cfg.eval_every:
            last = self.evaluate()
            self.log(last)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="opd", disable=not (self.is_main and self.cfg.logging.progress))
        skipped_run = failed_run = 0
        while self.step < cfg.steps:
            try:
                metrics = self.train_step()
            except RuntimeError as e:
                if self.world > 1 and any(k in str(e) for k in PEER_LOST):
                    raise RuntimeError(
                        f"rank {self.rank}, step {self.step + 1}: lost contact with another process (it died, or it "
                        f"froze for over train.collective_timeout_s={cfg.collective_timeout_s:g} s); the last "
                        f"checkpoint is in {self.out / 'checkpoints'}") from e
                raise
            self.step += 1
            skipped_run = skipped_run + 1 if metrics.get("train/skipped") else 0
            failed_run = failed_run + 1 if metrics.get("teacher/failed_frac", 0.0) >= 1.0 else 0
            # the budget counts training steps only; every rank stops at the same step (max over ranks)
            self.train_seconds += metrics["time/step"]
            metrics["time/train_elapsed"] = self.train_seconds
            out_of_time = self.engine.budget_reached(self.train_seconds, cfg.time_budget_s)
            if cfg.eval_every and (self.step % cfg.eval_every == 0 or out_of_time):
                metrics.update(self.evaluate())
            self.log(metrics)
            last = metrics
            bar.update(1)
            bar.set_postfix({**({"rkl": f"{metrics['opd/reverse_kl']:.3f}"} if "opd/reverse_kl" in metrics else {}),
                             "acc": f"{metrics['reward/accuracy']:.2f}"})
            if skipped_run >= cfg.max_skipped_in_a_row:
                self.close_log()
                raise RuntimeError(f"step {self.step}: {skipped_run} steps in a row were skipped for a non-finite loss "
                                   f"or gradient norm (train.max_skipped_in_a_row={cfg.max_skipped_in_a_row}); the "
                                   f"last checkpoint is in {self.out / 'checkpoints'}")
            if failed_run >= cfg.max_teacher_failures_in_a_row:
                self.close_log()
                raise RuntimeError(f"step {self.step}: teacher scoring failed for every rollout of {failed_run} steps in "
                                   f"a row (train.max_teacher_failures_in_a_row={cfg.max_teacher_failures_in_a_row}); "
                                   "check the teachers (server up? model loaded?)")
            if out_of_time:
                if self.is_main:
                    print(f"time budget of {cfg.time_budget_s:.0f} s of training reached at step {self.step}")
                break
            if cfg.save_every > 0 and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        bar.close()
        if cfg.save_every >= 0:
            last["checkpoint"] = str(self.save_checkpoint())
        self.close_log()
        return last

    def close_log(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def log(self, metrics: dict) -> None:
        if self.logger is not None and metrics:
            self.logger.log(self.step, {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not
                                        (isinstance(v, float) and math.isnan(v) and k.startswith("time/"))})
