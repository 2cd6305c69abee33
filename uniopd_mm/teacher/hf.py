"""A local Hugging Face teacher: the teacher's processor renders the prompt, the student's response
ids follow it, and one no-grad forward gives the teacher's log-probs of those ids."""

from __future__ import annotations

import math

import torch

from uniopd_mm.data import DataError
from uniopd_mm.models import score_response_tokens

from .base import TeacherScorer, TeacherScores


class HFTeacher(TeacherScorer):
    def __init__(self, model, processor, name: str = "teacher", micro_batch_size: int = 16,
                 temperature: float = 1.0, chunk_size: int = 256, suppressed_ids=None, prompt_cache=None):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.micro_batch_size, self.temperature, self.chunk_size = micro_batch_size, temperature, chunk_size
        # NOTE: the student's suppressed ids (never sampled) are masked here too, so both
        # distributions live on the same support.
        self.suppressed = sorted(set(suppressed_ids or []) | set(processor.suppressed_token_ids))
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.cache = prompt_cache if prompt_cache is not None else {}

    def encode(self, sample):
        key = sample.id
        if key not in self.cache:
            self.cache[key] = self.processor.encode_prompt(sample)
        return self.cache[key]

    def score(self, samples, responses, topk: int = 0, full: bool = False) -> TeacherScores:
        n = len(samples)
        width = max(1, max((len(r) for r in responses), default=1))
        logprobs = torch.zeros(n, width)
        failed = torch.zeros(n, dtype=torch.bool)
        reasons: list[str | None] = [None] * n
        topk_ids = torch.zeros(n, width, topk, dtype=torch.long) if topk else None
        topk_lp = torch.full((n, width, topk), -math.inf) if topk else None
        full_lp = None
        ok = []
        prompts = {}
        for i, (s, r) in enumerate(zip(samples, responses)):
            try:
                if any(t >= self.vocab_size for t in r):
                    raise ValueError(f"response id >= teacher vocabulary size {self.vocab_size}")
                prompts[i] = self.encode(s)
                ok.append(i)
            except (DataError, ValueError) as e:
                failed[i], reasons[i] = True, f"{type(e).__name__}: {e}"
        for start in range(0, len(ok), self.micro_batch_size):
            idx = ok[start:start + self.micro_batch_size]
            try:
                batch = self.processor.training_batch([prompts[i] for i in idx], [responses[i] for i in idx])
                sc = score_response_tokens(self.model, batch, self.suppressed, self.temperature, self.chunk_size,
                                           topk=topk, full=full)
                lp = sc["logprobs"]
                t = lp.shape[1]
                mask = batch["response_mask"].bool()
                for row, i in enumerate(idx):
                    if int(mask[row].sum()) != len(responses[i]):
                        failed[i] = True
                        reasons[i] = f"LengthMismatch: teacher scored {int(mask[row].sum())} tokens of {len(responses[i])}"
                logprobs[idx, :t] = torch.where(mask, lp, torch.zeros_like(lp))
                if topk:
                    topk_ids[idx, :t], topk_lp[idx, :t] = sc["topk_ids"], sc["topk_logprobs"]
                if full:
                    if full_lp is None:
                        full_lp = torch.zeros(n, width, sc["full_logprobs"].shape[-1])
                    full_lp[idx, :t] = sc["full_logprobs"]
            except Exception as e:  # one bad micro-batch must not take the step down
                for i in idx:
                    failed[i], reasons[i] = True, f"{type(e).__name__}: {e}"
        return TeacherScores(logprobs, failed, reasons, topk_ids, topk_lp, full_lp)
