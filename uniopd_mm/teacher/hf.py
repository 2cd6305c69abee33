"""A local Hugging Face teacher: the teacher's processor renders the prompt (its own chat template
and modality view), the student's response follows it, and one no-grad forward gives the teacher's
log-probs of the response tokens.

Shared vocabulary: the student's response ids are scored as they are. Another vocabulary: the
response text is re-tokenised with the teacher's tokenizer and the teacher's log-probs are
aligned with the student's tokens in chunks of shared character boundaries (``algo.xtok``, RECIPE 7).
"""

from __future__ import annotations

import torch

from uniopd_mm.algo.xtok import align_chunks, chunk_totals
from uniopd_mm.data import PromptCache
from uniopd_mm.models import CompiledOrEager, base_and_head, score_response_tokens

from .base import RECORD_ERRORS, TeacherScorer, TeacherScores


def student_ends(tokenizer, ids: list[int]) -> tuple[str, list[int]]:
    """The response text and the end character offset of each student token.

    The fast tokenizer's offsets of the decoded text, when re-encoding it gives back the same ids (the usual
    case); else a cumulative decode, prefix after prefix (quadratic in the length, and exact for any ids).
    """
    text = tokenizer.decode(ids, skip_special_tokens=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == list(ids):
        return text, [e for _, e in enc["offset_mapping"]]
    ends, prev = [], ""
    for i in range(len(ids)):
        part = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        ends.append(len(part) if part.startswith(prev) else max(len(prev), len(part)))
        prev = part
    return prev, ends


class HFTeacher(TeacherScorer):
    def __init__(self, model, processor, name: str = "teacher", micro_batch_size: int = 16,
                 temperature: float = 1.0, chunk_size: int = 256, suppressed_ids=None, prompt_cache: int = 4096,
                 prompt_cache_bytes: int | None = None,
                 student_tokenizer=None, shared_vocab: bool | None = None, strip_response_prefix: str | None = None,
                 device: str | None = None, offload_when_idle: bool = False, compile: bool = False,
                 share_prompts: bool = False, prompts: PromptCache | None = None, student_stop_ids=None):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.micro_batch_size, self.temperature, self.chunk_size = micro_batch_size, temperature, chunk_size
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        # ``prompts``: an encoded-prompt cache to share (the student's, when the two processors render alike)
        self.encode = prompts if prompts is not None else processor.prompt_cache(prompt_cache, prompt_cache_bytes)
        self.student_tokenizer = student_tokenizer or processor.tokenizer
        if shared_vocab is None:
            shared_vocab = self.student_tokenizer.get_vocab() == processor.tokenizer.get_vocab()
        self.shared_vocab = shared_vocab
        # another vocabulary: the student's end-of-turn token is scored as the teacher's own (never as the literal
        # text "<|im_end|>", several ordinary tokens of tiny probability that would give the stop no signal)
        self.student_stop_ids = set(student_stop_ids or [])
        self.end_of_turn = processor.end_of_turn_id
        # NOTE: with a shared vocabulary the student's suppressed ids (never sampled) are masked here
        # too, so both distributions live on the same support.
        own = set(processor.suppressed_token_ids)
        self.suppressed = sorted(own | set(suppressed_ids or [])) if shared_vocab else sorted(own)
        self.prefix_ids = (self.student_tokenizer(strip_response_prefix, add_special_tokens=False)["input_ids"]
                           if strip_response_prefix else [])
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.offload = offload_when_idle
        self.model.to("cpu" if offload_when_idle else self.device)
        self.share_prompts = share_prompts
        # a compiled backbone fuses each layer's element-wise ops (norms, rotary, SiLU gate): -25% of the
        # tiny teacher's forward on a CPU; shapes vary per step, so dynamo's automatic dynamic shapes
        # recompile once, after the first new shape
        self.backbone = CompiledOrEager(base_and_head(model)[0], f"teacher {name}") if compile else None

    def _teacher_ids(self, response: list[int]) -> tuple[list[int], int, tuple | None]:
        """(ids to score, offset of the first scored student token, cross-tokenizer info or None)."""
        start = 0
        if self.prefix_ids and response[: len(self.prefix_ids)] == self.prefix_ids:
            start = len(self.prefix_ids)
        body = response[start:]
        if self.shared_vocab:
            if any(t >= self.vocab_size for t in body):
                raise ValueError(f"response id >= teacher vocabulary size {self.vocab_size}")
            return body, start, None
        stop = bool(body) and body[-1] in self.student_stop_ids and self.end_of_turn is not None
        text, ends = student_ends(self.student_tokenizer, body[:-1] if stop else body)
        enc = self.processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        student_chunk, teacher_chunk = align_chunks(torch.tensor(ends, dtype=torch.long),
                                                    torch.tensor([e for _, e in enc["offset_mapping"]], dtype=torch.long))
        ids = list(enc["input_ids"])
        if stop:  # the stop is a chunk of its own: the student's end of turn against the teacher's
            last = torch.tensor([int(student_chunk.max()) + 1 if len(student_chunk) else 0])
            student_chunk, teacher_chunk = torch.cat([student_chunk, last]), torch.cat([teacher_chunk, last])
            ids.append(self.end_of_turn)
        return ids, start, (student_chunk, teacher_chunk)

    def score(self, samples, responses, topk: int = 0, full: bool = False) -> TeacherScores:
        if not self.shared_vocab and (topk or full):
            raise ValueError(f"teacher {self.name}: top-k / full-vocabulary losses need a shared vocabulary")
        n = len(samples)
        width = max(1, max((len(r) for r in responses), default=1))
        out = TeacherScores.empty(n, width)
        failed, reasons = out.failed, out.reasons
        if topk:  # unscored positions: finite, and masked
            out.topk_ids, out.topk_logprobs = torch.zeros(n, width, topk, dtype=torch.long), torch.zeros(n, width, topk)
        prepared = {}
        for i, (s, r) in enumerate(zip(samples, responses)):
            try:
                prepared[i] = (self.encode(s), *self._teacher_ids(r))
            except RECORD_ERRORS as e:  # a prompt the teacher cannot take fails that sample only
                failed[i], reasons[i] = True, f"{type(e).__name__}: {e}"
        ok = list(prepared)
        if self.offload:
            self.model.to(self.device)
        try:
            queue = [ok[start:start + self.micro_batch_size] for start in range(0, len(ok), self.micro_batch_size)]
            while queue:
                idx = queue.pop(0)
                try:
                    batch = self.processor.training_batch([prepared[i][0] for i in idx], [prepared[i][1] for i in idx])
                    sc = score_response_tokens(self.model, batch, self.suppressed, self.temperature, self.chunk_size,
                                               topk=topk, full=full, backbone=self.backbone,
                                               share_prompts=self.share_prompts)
                except RECORD_ERRORS as e:
                    # NOTE: a record whose inputs the model refuses (image features that do not match its
                    # placeholders, say) fails its own rows: the micro-batch is scored again row by row to find
                    # it. Out-of-memory and programming errors are not caught: they stop the run, the first
                    # with the teacher stage's advice on what to lower.
                    if len(idx) > 1:
                        queue[:0] = [[i] for i in idx]
                        continue
                    failed[idx[0]], reasons[idx[0]] = True, f"{type(e).__name__}: {e}"
                    continue
                scored = batch["response_mask"].sum(-1).tolist()
                for row, i in enumerate(idx):
                    self._store(out, i, row, prepared[i], sc, int(scored[row]))
        finally:
            if self.offload:
                self.model.to("cpu")
        return out

    @staticmethod
    def _store(out: TeacherScores, i: int, row: int, entry, sc: dict, scored: int) -> None:
        """Writes row ``row`` of a micro-batch's scores ``sc`` (``scored`` response tokens) into rollout ``i`` of
        ``out``; ``entry``: the rollout's (prompt, teacher ids, offset, cross-tokenizer chunks or None)."""
        _, ids, offset, xtok = entry
        if scored != len(ids):
            out.failed[i], out.reasons[i] = True, f"LengthMismatch: teacher scored {scored} tokens of {len(ids)}"
            return
        span = slice(offset, offset + len(ids))
        lp = sc["logprobs"][row, : len(ids)].float().cpu()
        if xtok is None:
            out.logprobs[i, span] = lp
            out.token_mask[i, span] = 1.0
        else:  # each student token gets its chunk's total teacher log-prob (algo.xtok)
            student_chunk, teacher_chunk = xtok
            n_s = len(student_chunk)
            totals = chunk_totals(lp, teacher_chunk, int(student_chunk.max()) + 1)
            out.logprobs[i, offset: offset + n_s] = totals[student_chunk]
            out.token_mask[i, offset: offset + n_s] = 1.0
            if out.chunks is None:
                out.chunks = torch.full(out.logprobs.shape, -1, dtype=torch.long)
            out.chunks[i, offset: offset + n_s] = student_chunk
        if out.topk_ids is not None:
            out.topk_ids[i, span] = sc["topk_ids"][row, : len(ids)].cpu()
            out.topk_logprobs[i, span] = sc["topk_logprobs"][row, : len(ids)].float().cpu()
        if "full_logprobs" in sc:
            if out.full_logprobs is None:
                out.full_logprobs = torch.zeros(*out.logprobs.shape, sc["full_logprobs"].shape[-1])
            out.full_logprobs[i, span] = sc["full_logprobs"][row, : len(ids)].float().cpu()
