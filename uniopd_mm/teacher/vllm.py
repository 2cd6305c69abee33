"""Teachers that score through prompt log-probs: a local vLLM engine (``VLLMTeacher``) and an
OpenAI-compatible server such as ``vllm serve`` (``ServedTeacher``).

Both send the teacher's own prompt followed by the student's response tokens and read the log-prob
of every response token from ``prompt_logprobs``. They need the student's vocabulary (a shared
tokenizer): cross-tokenizer projection needs the teacher's own tokenization and is done by the HF
teacher. A sample whose scoring fails (error, timeout, missing or non-finite values, a length that
does not match) is marked failed with its reason, never given silent zeros.
"""

from __future__ import annotations

import math
import os
import time

import torch


from .base import RECORD_ERRORS, TeacherScorer, TeacherScores


class RequestFailed(Exception):
    """A scoring request that an engine or server refused or never answered: its rows fail, the step goes on
    (a teacher that fails every rollout for ``train.max_teacher_failures_in_a_row`` steps stops the run)."""


def response_logprobs_from_prompt_logprobs(prompt_logprobs, ids: list[int], n_response: int) -> list[float]:
    """The log-probs of the last ``n_response`` tokens of ``ids`` from a ``prompt_logprobs`` list (one
    entry per prompt token, the first None; an entry maps token id (int or str) to a value or to an
    object / dict with ``logprob``)."""
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        raise ValueError(f"prompt_logprobs has {None if prompt_logprobs is None else len(prompt_logprobs)} entries "
                         f"for {len(ids)} tokens")
    out = []
    for pos in range(len(ids) - n_response, len(ids)):
        entry, tok = prompt_logprobs[pos], ids[pos]
        if entry is None:
            raise ValueError(f"no log-prob at position {pos}")
        val = entry.get(tok, entry.get(str(tok))) if isinstance(entry, dict) else None
        if val is None:
            raise ValueError(f"position {pos}: token {tok} missing from prompt_logprobs")
        lp = float(val["logprob"] if isinstance(val, dict) else getattr(val, "logprob", val))
        if not math.isfinite(lp):
            raise ValueError(f"position {pos}: non-finite log-prob {lp}")
        out.append(lp)
    return out


class PromptLogprobTeacher(TeacherScorer):
    """Shared part: teacher prompts, response ids, and merging the per-sample results."""

    def __init__(self, processor, name: str = "teacher", student_tokenizer=None, shared_vocab: bool | None = None,
                 strip_response_prefix: str | None = None, micro_batch_size: int = 16, prompt_cache: int = 4096,
                 prompt_cache_bytes: int | None = None, **_):
        self.processor, self.name, self.micro_batch_size = processor, name, micro_batch_size
        self.student_tokenizer = student_tokenizer or processor.tokenizer
        if shared_vocab is None:
            shared_vocab = self.student_tokenizer.get_vocab() == processor.tokenizer.get_vocab()
        if not shared_vocab:
            raise ValueError(f"teacher {name}: the vLLM and served teachers need the student's vocabulary; use the hf "
                             "backend for a teacher with another tokenizer")
        self.prefix_ids = (self.student_tokenizer(strip_response_prefix, add_special_tokens=False)["input_ids"]
                           if strip_response_prefix else [])
        self.encode = processor.prompt_cache(prompt_cache, prompt_cache_bytes)

    def _request(self, prompt, body: list[int]):
        raise NotImplementedError

    def _score_batch(self, requests: list) -> list:
        """One result per request: the prompt_logprobs list, or an Exception."""
        raise NotImplementedError

    def score(self, samples, responses, topk: int = 0, full: bool = False) -> TeacherScores:
        if topk or full:
            raise ValueError(f"teacher {self.name}: top-k / full-vocabulary losses need a local hf teacher")
        n = len(samples)
        width = max(1, max((len(r) for r in responses), default=1))
        out = TeacherScores.empty(n, width)
        logprobs, token_mask, failed, reasons = out.logprobs, out.token_mask, out.failed, out.reasons
        prepared = {}
        for i, (s, r) in enumerate(zip(samples, responses)):
            start = len(self.prefix_ids) if self.prefix_ids and r[: len(self.prefix_ids)] == self.prefix_ids else 0
            try:
                prompt = self.encode(s)
                body = list(r[start:])
                prepared[i] = (self._request(prompt, body), prompt, body, start)
            except RECORD_ERRORS as e:  # a bad record fails its sample only
                failed[i], reasons[i] = True, f"{type(e).__name__}: {e}"
        ok = list(prepared)
        for b in range(0, len(ok), self.micro_batch_size):
            idx = ok[b:b + self.micro_batch_size]
            results = self._score_batch([prepared[i][0] for i in idx])
            for i, res in zip(idx, results):
                _, prompt, body, start = prepared[i]
                try:
                    if isinstance(res, Exception):
                        raise res
                    ids, plp = res
                    lp = response_logprobs_from_prompt_logprobs(plp, ids, len(body))
                except (*RECORD_ERRORS, RequestFailed) as e:  # a refused or lost request, a non-finite log-prob
                    failed[i], reasons[i] = True, f"{type(e).__name__}: {e}"
                    continue
                logprobs[i, start: start + len(body)] = torch.tensor(lp)
                token_mask[i, start: start + len(body)] = 1.0
        return out


class VLLMTeacher(PromptLogprobTeacher):
    """A local ``vllm.LLM`` teacher (``model`` is its checkpoint path)."""

    def __init__(self, model, processor, engine_kwargs: dict | None = None, world_size: int = 1, **kw):
        super().__init__(processor, **kw)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from ..rollout.vllm import colocated

        self.llm = LLM(model=str(model), **colocated(engine_kwargs or {}, world_size, "teacher.vllm"))

    def _request(self, prompt, body):
        if prompt.multi_modal_data:
            ids = self.processor.tokenizer(prompt.text, add_special_tokens=False)["input_ids"] + body
            # the visuals are sized already (see rollout.vllm.vllm_request)
            return {"prompt_token_ids": ids, "multi_modal_data": dict(prompt.multi_modal_data),
                    "mm_processor_kwargs": {"do_resize": False}}
        return {"prompt_token_ids": list(prompt.prompt_ids) + body}

    def _score_batch(self, requests):
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        try:
            outs = self.llm.generate(requests, sp, use_tqdm=False)
        except RECORD_ERRORS as e:  # vLLM validates each request (a prompt over max_model_len, say): find the bad one
            if len(requests) == 1:
                return [e]
            return [self._score_batch([r])[0] for r in requests]
        return [(list(o.prompt_token_ids), o.prompt_logprobs) for o in outs]


def retryable(error: Exception) -> bool:
    """Whether a failed request may succeed when sent again: timeouts, lost connections and 5xx answers may; a
    4xx answer (a malformed request, an unknown model, a prompt over the server's length) will not, except 408
    (request timeout) and 429 (too many requests)."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status is None or status >= 500 or status in (408, 429)


class ServedTeacher(PromptLogprobTeacher):
    """A teacher behind an OpenAI-compatible completions endpoint that returns ``prompt_logprobs``
    (``vllm serve MODEL``): text prompts as token ids, batched, with a timeout and retries."""

    def __init__(self, processor, url: str, model_name: str, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5, api_key: str | None = None, **kw):
        super().__init__(processor, **kw)
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1") + "/completions"
        self.model_name, self.timeout, self.retries, self.backoff = model_name, timeout, retries, backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _request(self, prompt, body):
        if prompt.multi_modal_data:
            raise ValueError("a served teacher takes text prompts only (token ids); use a local teacher for images/video")
        return list(prompt.prompt_ids) + body

    def _score_batch(self, requests):
        import httpx

        payload = {"model": self.model_name, "prompt": requests, "max_tokens": 1, "temperature": 0.0,
                   "prompt_logprobs": 0, "echo": False}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                r = httpx.post(self.url, json=payload, headers=self.headers, timeout=self.timeout)
                r.raise_for_status()
                choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
                if len(choices) != len(requests):
                    raise ValueError(f"the server answered {len(choices)} choices for {len(requests)} prompts")
                return [(ids, c.get("prompt_logprobs")) for ids, c in zip(requests, choices)]
            except Exception as e:  # noqa: BLE001 - retried, then reported on every sample of the batch
                last = e
                if not retryable(e):
                    err = RequestFailed(f"served teacher {self.url} refused the request (not retried): "
                                       f"{type(e).__name__}: {e}")
                    return [err] * len(requests)
                if attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt))
        err = RequestFailed(f"served teacher {self.url} failed after {self.retries + 1} tries: "
                           f"{type(last).__name__}: {last}")
        return [err] * len(requests)
