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
from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .algo.loss import aggregate, distribution_loss, kl_penalty, ppo_clip_loss, renormalise_topk
from .algo.balance import online_balance_keep
from .algo.margin import (greedy_margin_mask, margin_shift, order_consistency, shift_dropped_tokens,
                          trajectory_returns)
from .algo.opd import logratio_mask, opd_advantages, teacher_failure_mask
from .algo.outcome import add_outcome, grpo_advantages
from .algo.xtok import chunk_reward_logprobs
from .config import Config, ConfigError
from .data import DataError, MixtureSampler, PromptCache, PromptSampler, RejectLog, load_jsonl, load_test_records, rank_file
from .evaluate import evaluate
from .metrics import MetricsLogger, Timer
from .models import load_model, load_processor, model_device, response_logprobs
from .rollout import SamplingParams, make_rollout_engine
from .teacher import TeacherScores, make_teacher
from .training import make_training_engine
from .training.base import even_micro_batches, micro_batch_rows
from .verifiers import verify


def _error_names(cls) -> set[str]:
    return {cls.__name__}.union(*(_error_names(c) for c in cls.__subclasses__()))


DATA_ERRORS = _error_names(DataError)  # every reject type (sorted where counts are all-reduced)


# what gloo / NCCL say when a peer process is gone or stuck past the collective timeout
# what to lower when a stage runs out of GPU memory
OOM_ADVICE = {
    "rollout": "rollout.batch_size (sequences per generate call), rollout.n or rollout.max_new_tokens",
    "old_logprobs": "train.micro_batch_size or train.logprob_chunk, or set train.gradient_checkpointing=true",
    "teacher": "teacher.batch_size (default: train.micro_batch_size) or rollout.max_new_tokens, or set "
               "teacher.offload_when_idle=true",
    "update": "train.micro_batch_size, rollout.n or rollout.max_new_tokens, or set train.gradient_checkpointing=true",
    "eval": "rollout.batch_size or rollout.max_new_tokens",
}


class StageOutOfMemory(RuntimeError):
    """A CUDA out-of-memory error in one stage of a step, with the settings that bound that stage's memory."""


PEER_LOST = ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer", "NCCL communicator")


def pad_rows(rows: list[list[float]], value: float = 0.0) -> torch.Tensor:
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), width), value, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


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
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.engine.barrier()
        self.rejects = RejectLog(rank_file(cfg.rejects_path, self.rank))
        # every rank reads the whole data (same order); only rank 0 records the rejects
        self.samples, self.sampler = self.load_data()
        self.warn_if_unverifiable()
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
        # teachers are loaded once; each prompt is scored by exactly one of them
        self.teachers = {name: self.make_teacher(name, t) for name, t in cfg.teacher_registry.items()}
        self.ref_model = None
        if cfg.algo.kl_coef > 0:
            self.ref_model = load_model(cfg.student, device=str(model_device(self.engine.module)), frozen=True)
        if cfg.rollout.backend == "vllm":
            self.rollout = make_rollout_engine("vllm", model_path=cfg.student.path, processor=self.student_proc,
                                               seed=cfg.seed * 1000 + self.rank, **cfg.rollout.vllm.engine_kwargs())
        else:
            self.rollout = make_rollout_engine(cfg.rollout.backend, model=self.engine.module,
                                               processor=self.student_proc, batch_size=cfg.rollout.batch_size,
                                               decoder=cfg.rollout.decoder, compile_decoder=cfg.rollout.compile_decoder)
        self.encode = PromptCache(cfg.train.prompt_cache, self.student_proc.encode_prompt)
        self.bad_keys: set[str] = set()  # Sample.key (file and line): ids repeat across the files of a mixture
        self.step = 0
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

    def make_teacher(self, name, t):
        """One scorer per configured teacher: a local HF model, a local vLLM engine, or a server."""
        cfg = self.cfg
        common = dict(processor=load_processor(t), name=name,
                      micro_batch_size=t.batch_size or cfg.train.micro_batch_size,
                      prompt_cache=cfg.train.prompt_cache,
                      student_tokenizer=self.student_proc.tokenizer, shared_vocab=t.shared_vocab,
                      strip_response_prefix=t.strip_response_prefix)
        if t.backend == "served":
            return make_teacher("served", url=t.url, model_name=t.served_model_name, timeout=t.timeout,
                                retries=t.retries, **common)
        if t.backend == "vllm":
            return make_teacher("vllm", model=t.path, engine_kwargs=t.vllm.engine_kwargs(), **common)
        return make_teacher("hf", model=load_model(t, frozen=True), temperature=cfg.rollout.temperature,
                            suppressed_ids=self.suppressed, device=t.device, offload_when_idle=t.offload_when_idle,
                            compile=t.compile, share_prompts=t.share_prompts, **common)

    # -- data and prompts ---------------------------------------------------------------------
    def load_data(self):
        """The training records and their sampler: one file, or a weighted mixture with teacher tags."""
        d = self.cfg.data
        rejects = self.rejects if self.is_main else RejectLog(None)
        progress = self.is_main and self.cfg.logging.progress
        if not d.mixture:
            samples = load_jsonl(d.train_path, d.strict, rejects, d.verify_media, progress=progress)
            return samples, PromptSampler(len(samples), self.cfg.seed)
        samples, sizes = [], []
        for entry in d.mixture:
            part = load_jsonl(entry.path, d.strict, rejects, d.verify_media, progress=progress)
            for s in part:
                s.teacher = s.teacher or entry.teacher
            samples += part
            sizes.append(len(part))
        return samples, MixtureSampler(sizes, [e.weight for e in d.mixture], self.cfg.seed)

    def warn_if_unverifiable(self) -> None:
        """RECIPE 7 (Unknown correctness): balancing and margin calibration act on verdicts only; with most
        records unverifiable (no verifier for their domain, or no answer) a Uni-OPD setting silently runs
        plain OPD. Warns once at load time; ``reward/unknown_frac`` is logged every step."""
        a = self.cfg.algo
        if not (a.balance.enabled or a.margin.shift or a.margin.mask) or not self.samples:
            return
        from .verifiers import verifier_for

        def unverifiable(s) -> bool:  # as verify() decides: no verifier, or no answer to check (code needs none)
            name = verifier_for(s.domain, s.meta)
            return name is None or (s.answer is None and name != "code")

        bad = [s for s in self.samples if unverifiable(s)]
        if len(bad) * 2 > len(self.samples) and self.is_main:
            domains = sorted({s.domain for s in bad})[:5]
            warnings.warn(f"{len(bad)} of {len(self.samples)} training records have no verifier for their domain "
                          f"(e.g. {domains}) or no answer: their rollouts are 'unknown', and online balancing / margin "
                          "calibration ignore them, so this run is mostly plain OPD. Give each record a domain with a "
                          "verifier (math*, code*, choice, numeric, string, the synthetic ones) or meta.verifier.",
                          stacklevel=2)

    def teacher_of(self, sample) -> str:
        names = list(self.teachers)
        name = sample.teacher or self.cfg.data.default_teacher or (names[0] if len(names) == 1 else None)
        if name not in self.teachers:
            raise sample.error(DataError, f"record routes to teacher {name!r}, not one of {names}")
        return name

    def next_prompts(self):
        """This rank's prompts of the next step; bad ones are rejected once and skipped."""
        idx = self.sampler.next(self.cfg.train.prompts_per_step)
        self.seen_ids.append([self.samples[i].id for i in idx])
        samples, prompts, prompt_groups = [], [], []
        for pos in range(self.rank, len(idx), self.world):
            s = self.samples[idx[pos]]
            if s.key in self.bad_keys:
                continue
            try:
                self.teacher_of(s)
                prompts.append(self.encode(s))
            except DataError as err:
                self.bad_keys.add(s.key)
                if self.cfg.data.strict:
                    raise
                self.rejects.add(err)
                continue
            samples.append(s)
            prompt_groups.append(pos)
        return samples, prompts, prompt_groups

    # -- micro-batches ------------------------------------------------------------------------
    def student_batch(self, prompts, responses, rows):
        take, _ = micro_batch_rows(rows)
        return self.student_proc.training_batch([prompts[r] for r in take], [responses[r] for r in take])

    # -- the step -----------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, t = self.cfg, self.stage
        t_step = time.perf_counter()
        samples, prompts, prompt_groups = self.next_prompts()
        if not prompts:
            raise RuntimeError(f"rank {self.rank}: every prompt of step {self.step} was rejected (see {self.rejects.path})")

        # 1. rollout
        with t("rollout"), self.engine.rollout_context():
            ro = self.rollout.generate(prompts, SamplingParams(
                n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens))
        self.rollout.sleep()  # a vLLM engine with sleep mode frees its memory until the sync
        responses = ro.responses
        r_samples = [samples[i] for i in ro.prompt_index]
        r_prompts = [prompts[i] for i in ro.prompt_index]
        group_ids = torch.tensor([prompt_groups[i] for i in ro.prompt_index])
        n = len(responses)

        # 2. verify
        with t("verify"):
            outcomes = [verify(s, self.student_proc.decode(r)) for s, r in zip(r_samples, responses)]

        # 3. old logprobs (and reference logprobs for the KL penalty)
        response_mask = pad_rows([[1.0] * len(r) for r in responses])
        old_logprobs = torch.zeros_like(response_mask)
        ref = torch.zeros_like(response_mask) if self.ref_model is not None else None
        chunks = even_micro_batches(n, cfg.train.micro_batch_size, self.engine)
        reuse = cfg.rollout.reuse_logprobs
        if reuse:
            old_logprobs = pad_rows(ro.logprobs)[:, : response_mask.shape[1]] * response_mask
        forward_needed = not reuse or ref is not None
        with t("old_logprobs"), torch.no_grad():
            for rows in chunks if forward_needed else []:
                take, counts = micro_batch_rows(rows)
                batch = self.student_batch(r_prompts, responses, rows)
                if not reuse:
                    lp = response_logprobs(self.engine.forward_model, batch, self.suppressed,
                                           cfg.rollout.temperature, cfg.train.logprob_chunk,
                                           share_prompts=cfg.train.share_prompts)["logprobs"]
                    if counts:
                        old_logprobs[take, : lp.shape[1]] = lp[: len(take)].cpu() * batch["response_mask"][: len(take)]
                if ref is not None and counts:
                    rlp = response_logprobs(self.ref_model, batch, self.suppressed, cfg.rollout.temperature,
                                            cfg.train.logprob_chunk, share_prompts=cfg.train.share_prompts)["logprobs"]
                    ref[take, : rlp.shape[1]] = rlp[: len(take)].cpu() * batch["response_mask"][: len(take)]

        # 4. teacher scores: each rollout by its prompt's teacher
        with t("teacher"):
            routes = [self.teacher_of(s) for s in r_samples]
            if cfg.algo.advantage == "grpo":  # outcome-only: the teacher is not called (log ratio 0 everywhere)
                scores = TeacherScores(old_logprobs.clone(), torch.zeros(n, dtype=torch.bool), [None] * n,
                                       token_mask=torch.ones_like(old_logprobs))
            else:
                scores = self.score_by_teacher(r_samples, responses, routes, response_mask.shape[1])
        teacher_logprobs = scores.logprobs
        if scores.chunks is not None:  # cross-tokenizer teachers: every token of a chunk gets the chunk's signal
            teacher_logprobs = chunk_reward_logprobs(teacher_logprobs, old_logprobs, scores.chunks)

        # 5. advantages and masks
        with t("advantages"):
            ok = teacher_failure_mask(teacher_logprobs, response_mask, scores.failed)
            self.record_teacher_failures(r_samples, routes, scores, ok)
            ratio_keep = logratio_mask(old_logprobs, teacher_logprobs, cfg.algo.logratio_threshold)
            loss_mask = response_mask * ok[:, None] * ratio_keep * scores.token_mask
            correct = torch.tensor([1 if c is True else 0 if c is False else -1 for c in outcomes])
            names = list(self.teachers)
            teacher_ids = torch.tensor([names.index(r) for r in routes]) if len(names) > 1 else None
            ratio_dropped = response_mask * ok[:, None] * (1 - ratio_keep) * scores.token_mask
            advantages, loss_mask, calib = self.calibrate(teacher_logprobs, old_logprobs, loss_mask, correct, group_ids,
                                                          teacher_ids,
                                                          ratio_dropped)
            stats = self.local_stats(responses, ro, old_logprobs, teacher_logprobs, response_mask, loss_mask, ok, outcomes,
                                     ratio_keep)
            per_teacher = self.teacher_metrics(routes, old_logprobs, teacher_logprobs, loss_mask, ok)

        # 6. update
        normalizer = self.global_normalizer(loss_mask)
        tensors = {"old_logprobs": old_logprobs, "adv": advantages, "mask": loss_mask, "ref": ref,
                   "t_full": scores.full_logprobs, "t_topk_ids": scores.topk_ids, "t_topk_lp": scores.topk_logprobs}

        def compute_loss(model, rows):
            return self.loss(model, r_prompts, responses, rows, tensors, normalizer)

        with t("update"):
            train_metrics = self.engine.train_step(chunks, compute_loss)

        # 7. sync
        with t("sync"):
            self.rollout.wake_up()
            self.rollout.sync_weights(self.engine.weights_for_sync())  # a no-op for the HF engine (shared module)

        metrics = {**self.reduce_stats(stats), **calib, **per_teacher, **train_metrics, **self.timer.pop(),
                   **self.data_metrics()}
        step_time = time.perf_counter() - t_step
        metrics["time/step"] = step_time
        if torch.cuda.is_available():
            metrics["memory/peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        metrics["throughput/tokens_per_s"] = metrics["response/tokens"] / max(step_time, 1e-9)
        return metrics

    @contextlib.contextmanager
    def stage(self, name: str):
        """Times stage ``name``; a CUDA out-of-memory error in it stops the run with what to lower.

        NOTE: nothing is saved on the way out: the last complete checkpoint stays the one a resume loads.
        """
        with self.timer(name):
            try:
                yield
            except torch.cuda.OutOfMemoryError as e:
                advice = OOM_ADVICE.get(name, "train.micro_batch_size, rollout.n or rollout.max_new_tokens")
                raise StageOutOfMemory(
                    f"rank {self.rank}, step {self.step + 1}: CUDA out of memory in the {name} stage. Lower {advice}; "
                    f"the last complete checkpoint is in {self.out / 'checkpoints'}. ({str(e).splitlines()[0]})") from e

    def data_metrics(self) -> dict[str, float]:
        """Records rejected so far, by error type, and prompts cut to max_prompt_tokens (overlong_prompt:
        truncate), summed over ranks (load-time rejects are rank 0's, encode-time ones each rank's)."""
        names = sorted(DATA_ERRORS)
        local = [float(self.rejects.counts.get(n, 0)) for n in names] + [
            float(len(self.student_proc.truncated)),
            float(sum(len(getattr(getattr(t, "processor", None), "truncated", ())) for t in self.teachers.values()))]
        vec = self.engine.all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
        out = {"data/rejected": sum(vec[: len(names)])}
        out.update({f"data/rejected_{n}": v for n, v in zip(names, vec) if v})
        out["data/truncated_prompts"], out["data/truncated_teacher_prompts"] = vec[len(names):]
        return out

    def score_by_teacher(self, samples, responses, routes, width) -> TeacherScores:
        """Scores each rollout with its routed teacher and merges the results into [B, T] tensors."""
        a = self.cfg.algo
        topk = a.topk if a.loss != "pg" and a.distill_support == "topk" else 0
        full = a.loss != "pg" and a.distill_support == "full"
        n = len(responses)
        merged = TeacherScores.empty(n, width)
        for name, teacher in self.teachers.items():
            rows = [i for i, r in enumerate(routes) if r == name]
            if not rows:
                continue
            try:
                sc = teacher.score([samples[i] for i in rows], [responses[i] for i in rows], topk=topk, full=full)
            except Exception as e:  # noqa: BLE001 - a teacher that raises fails its rollouts, not the run
                merged.failed[rows] = True
                for i in rows:
                    merged.reasons[i] = f"{type(e).__name__}: {e}"
                continue
            w = min(width, sc.logprobs.shape[1])
            merged.logprobs[rows, :w] = sc.logprobs[:, :w]
            merged.token_mask[rows, :w] = sc.token_mask[:, :w] if sc.token_mask is not None else 1.0
            merged.failed[rows] = sc.failed
            if sc.chunks is not None:  # other rows keep one chunk per token (the identity)
                if merged.chunks is None:
                    merged.chunks = torch.arange(width).repeat(n, 1)
                merged.chunks[rows, :w] = sc.chunks[:, :w]
            for j, i in enumerate(rows):
                merged.reasons[i] = sc.reasons[j] if sc.reasons else None
            for attr, shape in (("topk_ids", (n, width, topk)), ("topk_logprobs", (n, width, topk))):
                src = getattr(sc, attr)
                if src is not None:
                    if getattr(merged, attr) is None:
                        setattr(merged, attr, torch.zeros(shape, dtype=src.dtype))
                    getattr(merged, attr)[rows, :w] = src[:, :w]
            if sc.full_logprobs is not None:
                if merged.full_logprobs is None:
                    merged.full_logprobs = torch.zeros(n, width, sc.full_logprobs.shape[-1])
                merged.full_logprobs[rows, :w] = sc.full_logprobs[:, :w]
        return merged

    def record_teacher_failures(self, samples, routes, scores, ok) -> None:
        """Appends each rollout the teacher-failure mask ``ok`` dropped (scoring failed, or gave NaN/inf)
        to teacher_failures.jsonl."""
        rows = (ok == 0).nonzero().flatten().tolist()
        if not rows:
            return
        path = rank_file(self.out / "teacher_failures.jsonl", self.rank)
        with open(path, "a") as fh:
            for i in rows:
                reason = scores.reasons[i] if scores.failed[i] else "non-finite teacher log-prob"
                fh.write(json.dumps({"step": self.step + 1, "id": samples[i].id, "teacher": routes[i],
                                     "reason": reason}) + "\n")

    def teacher_metrics(self, routes, old_logprobs, teacher_logprobs, loss_mask, ok) -> dict[str, float]:
        """Reverse KL and failures per teacher, over all ranks (only with more than one teacher; the inversion rate
        per teacher comes from ``calibrate``)."""
        if len(self.teachers) < 2:
            return {}
        out = {}
        for name in self.teachers:
            rows = torch.tensor([r == name for r in routes], dtype=torch.bool)
            counted = loss_mask.bool() & rows[:, None]
            vec = torch.tensor([((old_logprobs - teacher_logprobs) * counted).sum().item(), counted.sum().item(),
                                float(((ok == 0) & rows).sum().item()), float(rows.sum().item())], dtype=torch.float64)
            vec = self.engine.all_reduce(vec)
            out[f"teacher/{name}/reverse_kl"] = (vec[0] / vec[1].clamp(min=1)).item()
            out[f"teacher/{name}/failed"] = vec[2].item()
            out[f"teacher/{name}/rollouts"] = vec[3].item()
        return out

    def calibrate(self, teacher_logprobs, old_logprobs, loss_mask, correct, group_ids, teacher_ids=None,
                  ratio_dropped=None):
        """Online balancing, then margin calibration (RECIPE 3b, 4). Returns (advantages, loss mask, metrics).

        Rollouts whose outcome is unknown, or with no counted token, take no part. Global scopes see
        every rank's rollouts (gathered); group scopes are local since a prompt's rollouts share a rank.
        ``teacher_ids`` ([B], the index of each rollout's teacher, with several teachers): the inversion rate
        per teacher, measured where ``margin/inversion_rate`` is (after balancing, before calibration, all ranks).
        ``ratio_dropped`` ([B, T]): response tokens the log-ratio mask dropped; with ``margin.reach: response`` the
        shift reaches them too (they join the loss carrying the shift alone).
        """
        a = self.cfg.algo
        correct = torch.where(loss_mask.sum(-1) > 0, correct, torch.full_like(correct, -1))  # unusable: unknown
        rank_sizes = [len(x) for x in self.engine.all_gather(torch.zeros(len(correct)))]
        offset = sum(rank_sizes[: self.rank])

        def gathered(x):
            return torch.cat(self.engine.all_gather(x)) if self.world > 1 else x

        def local(x):
            return x[offset: offset + len(correct)] if self.world > 1 else x

        metrics = {}
        if a.balance.enabled:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
            if a.balance.scope == "global":
                keep = local(online_balance_keep(gathered(correct), gathered(group_ids), a.balance.ratio, "global",
                                                 gen))
            else:
                keep = online_balance_keep(correct, group_ids, a.balance.ratio, "group", gen)
            loss_mask = loss_mask * keep[:, None]
            dropped = ((keep == 0) & (correct >= 0)).sum().float().reshape(1)
            metrics["balance/dropped"] = self.engine.all_reduce(dropped).item()
            correct = torch.where(keep > 0, correct, torch.full_like(correct, -1))
        advantages = opd_advantages(teacher_logprobs, old_logprobs, loss_mask)
        g_returns, g_correct, g_group = (gathered(trajectory_returns(advantages, loss_mask)), gathered(correct),
                                          gathered(group_ids))
        before = order_consistency(g_returns, g_correct, g_group)
        metrics.update({f"margin/{k}": v for k, v in before.items()})
        if teacher_ids is not None:
            g_teacher = gathered(teacher_ids)
            for k, name in enumerate(self.teachers):
                rows = g_teacher == k
                if rows.any():
                    metrics[f"teacher/{name}/inversion_rate"] = order_consistency(
                        g_returns[rows], g_correct[rows], g_group[rows])["inversion_rate"]
        m = a.margin
        if m.shift:
            if m.scope == "global" and self.world > 1:
                # the shift is one scalar per class: compute it on the gathered returns, apply locally
                g_ret = gathered(trajectory_returns(advantages, loss_mask))
                ones = torch.ones(len(g_ret), 1)
                _, shift, lam = margin_shift(g_ret[:, None], ones, gathered(correct), gathered(group_ids), m.delta,
                                             m.mode, m.direction, "global")
                shift = local(shift)
                advantages = advantages + shift[:, None] * loss_mask
            else:
                advantages, shift, lam = margin_shift(advantages, loss_mask, correct, group_ids, m.delta, m.mode,
                                                      m.direction, m.scope)
            if m.reach == "response" and ratio_dropped is not None:
                advantages, loss_mask, extra = shift_dropped_tokens(advantages, loss_mask, shift, ratio_dropped)
                metrics["margin/reached_tokens"] = self.engine.all_reduce(extra.sum().reshape(1)).item()
            metrics["margin/lambda_mean"] = lam[lam > 0].mean().item() if (lam > 0).any() else 0.0
            metrics["margin/shifted_groups"] = float((lam > 0).sum().item())
        elif m.mask:
            returns = trajectory_returns(advantages, loss_mask)
            if m.scope == "global" and self.world > 1:
                keep = local(greedy_margin_mask(gathered(returns), gathered(correct), gathered(group_ids), m.delta,
                                                m.mode, "global", m.min_retain))
            else:
                keep = greedy_margin_mask(returns, correct, group_ids, m.delta, m.mode, m.scope, m.min_retain)
            # RECIPE 7: a masked rollout's advantages become 0 and it stays in the aggregation's denominator,
            # as in the reference code (its loss mask is left as it was)
            advantages = advantages * keep[:, None]
            metrics["margin/masked_rollouts"] = self.engine.all_reduce((keep == 0).sum().float().reshape(1)).item()
            correct = torch.where(keep > 0, correct, torch.full_like(correct, -1))
        if m.shift or m.mask:
            after = order_consistency(gathered(trajectory_returns(advantages, loss_mask)), gathered(correct), gathered(group_ids))
            metrics.update({f"margin_after/{k}": v for k, v in after.items()})
        if a.advantage == "grpo":  # the baselines: outcome only, or OPD plus the outcome (algo/outcome.py)
            advantages = grpo_advantages(correct, group_ids, loss_mask)
        elif a.advantage == "opd+outcome":
            advantages = add_outcome(advantages, correct, group_ids, loss_mask, a.outcome_coef)
        return advantages, loss_mask, metrics

    def loss(self, model, r_prompts, responses, rows, tensors, normalizer):
        cfg = self.cfg.algo
        batch = self.student_batch(r_prompts, responses, rows)
        take, counts = micro_batch_rows(rows)
        width = batch["responses"].shape[1]
        device = model_device(model)

        def sl(x):
            return x[take, :width].to(device)

        mask = sl(tensors["mask"]) * (1.0 if counts else 0.0)
        out = response_logprobs(model, batch, self.suppressed, self.cfg.rollout.temperature, self.cfg.train.logprob_chunk,
                                with_entropy=cfg.entropy_coef > 0, with_full=cfg.loss != "pg",
                                share_prompts=self.cfg.train.share_prompts)
        logp = out["logprobs"]
        metrics = {}
        if cfg.loss == "pg":
            loss, st = ppo_clip_loss(logp, sl(tensors["old_logprobs"]), sl(tensors["adv"]), mask, cfg.clip_low,
                                     cfg.clip_high, cfg.aggregation, normalizer)
            metrics.update({"train/clip_fraction": st["clip_fraction"].item(), "train/approx_kl": st["approx_kl"].item()})
        else:
            student_full = out["full_logprobs"]
            if cfg.distill_support == "full":
                s_lp, t_lp = student_full, sl(tensors["t_full"])
            else:
                ids = sl(tensors["t_topk_ids"])
                s_lp = renormalise_topk(student_full.gather(-1, ids))
                t_lp = renormalise_topk(sl(tensors["t_topk_lp"]))
            per_token = distribution_loss(s_lp, t_lp, cfg.loss, cfg.jsd_beta)
            loss = aggregate(per_token, mask, cfg.aggregation, normalizer)
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * aggregate(kl_penalty(logp, sl(tensors["ref"]), cfg.kl_estimator), mask,
                                                  cfg.aggregation, normalizer)
        if cfg.entropy_coef > 0:
            ent = aggregate(out["entropy"], mask, cfg.aggregation, normalizer)
            loss = loss - cfg.entropy_coef * ent
            metrics["train/entropy"] = ent.item()
        return loss, metrics

    def global_normalizer(self, loss_mask: torch.Tensor) -> float:
        """The global count the loss divides by, per rank (gradients are averaged over ranks)."""
        if self.cfg.algo.aggregation == "token_mean":
            local = loss_mask.sum()
        else:
            local = (loss_mask.sum(-1) > 0).sum().float()
        total = self.engine.all_reduce(local.reshape(1).float()).item()
        return max(total, 1.0) / self.world

    # -- metrics ------------------------------------------------------------------------------
    def local_stats(self, responses, ro, old_logprobs, teacher_logprobs, response_mask, loss_mask, ok, outcomes,
                    ratio_keep) -> dict[str, float]:
        tok = response_mask.sum().item()
        rollout_lp = pad_rows(ro.logprobs)[:, : old_logprobs.shape[1]]
        finite = torch.isfinite(rollout_lp) & response_mask.bool()
        counted = loss_mask.bool()
        return {
            "sum_rkl": ((old_logprobs - teacher_logprobs) * counted).sum().item(), "n_counted": counted.sum().item(),
            "n_tokens": tok, "n_resp": float(len(responses)),
            "n_truncated": float(sum(not f for f in ro.finished)),
            # the rollout engine's own log-probs, where it gives them (NaN: not RECIPE 7's quantity)
            "mismatch": torch.where(finite, (rollout_lp - old_logprobs).abs(), torch.zeros_like(old_logprobs)).sum().item(),
            "n_mismatch": finite.sum().item(),
            "n_failed": float((ok == 0).sum().item()),
            "n_correct": float(sum(c is True for c in outcomes)), "n_verified": float(sum(c is not None for c in outcomes)),
            # tokens of scored responses left out of the loss: by the log-ratio mask alone, and by any mask
            # (log ratio, online balancing, margin mask, a stripped response prefix)
            "n_logratio_dropped": float((response_mask.bool() & ~ratio_keep.bool() & ok.bool()[:, None]).sum().item()),
            "n_masked": float(((response_mask.bool() & ~counted) & ok.bool()[:, None]).sum().item()),
        }

    def reduce_stats(self, s: dict[str, float]) -> dict[str, float]:
        keys = sorted(s)
        vec = self.engine.all_reduce(torch.tensor([s[k] for k in keys], dtype=torch.float64))
        g = dict(zip(keys, vec.tolist()))
        out = {
            "opd/reverse_kl": g["sum_rkl"] / max(g["n_counted"], 1.0),
            "opd/counted_tokens": g["n_counted"],
            "opd/logratio_dropped_tokens": g["n_logratio_dropped"],
            "opd/masked_tokens": g["n_masked"],
            "teacher/failed": g["n_failed"],
            "teacher/failed_frac": g["n_failed"] / max(g["n_resp"], 1.0),
            "response/length_mean": g["n_tokens"] / max(g["n_resp"], 1.0),
            "response/truncated_frac": g["n_truncated"] / max(g["n_resp"], 1.0),
            "response/tokens": g["n_tokens"],
            "rollout/logprob_mismatch": g["mismatch"] / max(g["n_mismatch"], 1.0),
            "reward/accuracy": g["n_correct"] / max(g["n_verified"], 1.0),
            "reward/verified_frac": g["n_verified"] / max(g["n_resp"], 1.0),
            "reward/unknown_frac": 1.0 - g["n_verified"] / max(g["n_resp"], 1.0),
        }
        if self.cfg.rollout.reuse_logprobs or not g["n_mismatch"]:  # nothing to compare
            del out["rollout/logprob_mismatch"]
        return out

    # -- evaluation, checkpoints, the loop ------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if not self.test_samples:
            return {}
        with self.stage("eval"), self.engine.rollout_context():
            return evaluate(self.rollout, self.student_proc, self.test_samples, self.cfg.rollout.max_new_tokens,
                            all_reduce=self.engine.all_reduce, rank=self.rank, world_size=self.world,
                            on_error=self.reject_test_record)

    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "sampler": self.sampler.state(), "bad_keys": sorted(self.bad_keys),
                 "seen_ids": self.seen_ids, "world_size": self.world, "train_seconds": self.train_seconds}
        return ckpt.save(self.engine, self.out / "checkpoints", self.step, state, self.cfg.train.keep_last,
                         self.student_proc)

    def try_resume(self) -> bool:
        found = ckpt.resume(self.engine, self.out / "checkpoints")
        if found is None:
            return False
        last, state = found
        self.sampler.load_state(state["sampler"])
        self.bad_keys = set(state["bad_keys"])
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
            bar.set_postfix({"rkl": f"{metrics['opd/reverse_kl']:.3f}", "acc": f"{metrics['reward/accuracy']:.2f}"})
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
