"""Teachers as the trainer uses them: built from their config, each rollout scored by its routed teacher."""

from __future__ import annotations

import json

import torch

from . import make_teacher
from .base import TeacherScores


def teacher_from_config(name: str, t, cfg, student_proc, student_prompts=None, world_size: int = 1):
    """One scorer for teacher config ``t`` (wrapped to read its privileged context where ``t.context`` sets one)."""
    teacher = local_or_served(name, t, cfg, student_proc, student_prompts, world_size)
    if t.context.active:
        from .context import ContextTeacher

        return ContextTeacher(teacher, t.context.system, t.context.user_suffix)
    return teacher


def local_or_served(name: str, t, cfg, student_proc, student_prompts=None, world_size: int = 1):
    """One scorer for teacher config ``t``: a local HF model, a local vLLM engine, or a server.

    ``student_prompts``: the student's encoded-prompt cache, which a local HF teacher whose processor renders
    every sample as the student's does (``renders_like``) uses instead of encoding each prompt again (its
    truncated prompts are then the student's)."""
    from ..models import cache_frozen_vision, load_model, load_processor

    processor = load_processor(t)
    processor.keep_media = t.backend == "vllm"  # raw images / frames: only a vLLM engine reads them
    # a teacher with privileged context reads other prompts than the student's: it encodes its own
    shared = (student_prompts if t.backend == "hf" and not t.context.active and processor.renders_like(student_proc)
              else None)
    if shared is not None:
        processor.truncated = student_proc.truncated
    common = dict(processor=processor, name=name, micro_batch_size=t.batch_size or cfg.train.micro_batch_size,
                  prompt_cache=cfg.train.prompt_cache, prompt_cache_bytes=cfg.train.prompt_cache_bytes,
                  student_tokenizer=student_proc.tokenizer,
                  shared_vocab=t.shared_vocab, strip_response_prefix=t.strip_response_prefix)
    if t.backend == "served":
        return make_teacher("served", url=t.url, model_name=t.served_model_name, timeout=t.timeout,
                            retries=t.retries, **common)
    if t.backend == "vllm":
        return make_teacher("vllm", model=t.path, engine_kwargs=t.vllm.engine_kwargs(), world_size=world_size, **common)
    model = load_model(t, frozen=True)
    cache_frozen_vision(model, cfg.train.vision_cache, f"teacher {name}", max_bytes=cfg.train.vision_cache_bytes)
    return make_teacher("hf", model=model, temperature=cfg.rollout.temperature,
                        suppressed_ids=student_proc.suppressed_token_ids, device=t.device,
                        offload_when_idle=t.offload_when_idle, compile=t.compile, share_prompts=t.share_prompts,
                        prompts=shared, student_stop_ids=student_proc.eos_token_ids, **common)


def score_routed(teachers: dict, samples, responses, routes: list[str], width: int, topk: int = 0,
                 full: bool = False) -> TeacherScores:
    """Scores rollout i with teacher ``routes[i]`` and merges the results into [B, width] tensors.

    A bad record fails its own rollouts inside the teacher (``failed``, with the reason); a teacher that raises
    (out of memory, a programming error) stops the step: masking its rollouts would hide the cause.
    """
    n = len(responses)
    merged = TeacherScores.empty(n, width)
    for name, teacher in teachers.items():
        rows = [i for i, r in enumerate(routes) if r == name]
        if not rows:
            continue
        sc = teacher.score([samples[i] for i in rows], [responses[i] for i in rows], topk=topk, full=full)
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
        for attr in ("topk_ids", "topk_logprobs"):
            src = getattr(sc, attr)
            if src is not None:
                if getattr(merged, attr) is None:
                    setattr(merged, attr, torch.zeros((n, width, topk), dtype=src.dtype))
                getattr(merged, attr)[rows, :w] = src[:, :w]
        if sc.full_logprobs is not None:
            if merged.full_logprobs is None:
                merged.full_logprobs = torch.zeros(n, width, sc.full_logprobs.shape[-1])
            merged.full_logprobs[rows, :w] = sc.full_logprobs[:, :w]
    return merged


def record_failures(path, step: int, samples, routes, scores: TeacherScores, ok: torch.Tensor) -> None:
    """Appends each rollout the teacher-failure mask ``ok`` dropped (scoring failed, or a NaN / inf log-prob)
    to the JSONL file ``path``."""
    rows = (ok == 0).nonzero().flatten().tolist()
    if not rows:
        return
    with open(path, "a") as fh:
        for i in rows:
            reason = scores.reasons[i] if scores.failed[i] else "non-finite teacher log-prob"
            fh.write(json.dumps({"step": step, "id": samples[i].id, "teacher": routes[i], "reason": reason}) + "\n")
