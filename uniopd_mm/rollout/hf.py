"""Sampling on the training engine's own module (colocated, nothing to sync): Hugging Face
``generate``, or for text models a static-KV-cache decoding loop whose one-token step can be
``torch.compile``d (``rollout.decoder``). Both sample from the same distribution: suppressed ids,
then temperature, top-k, top-p, as ``generate``'s logits processors do, and nothing else: the
checkpoint's own sampling settings (``generation_config.json``: repetition penalty, top-k, min-p ...)
are reset to neutral ones when the engine is built (``models.reset_generation_config``). Both return
the raw logits' log-probs at the sampling temperature (what the training engine computes), reduced to
the sampled token at every decoding step: nothing of size [N, T, V] is ever held."""

from __future__ import annotations

import warnings

import torch

from uniopd_mm.algo.logprobs import log_softmax_full, suppress
from uniopd_mm.models import CompiledOrEager, eval_mode, reset_generation_config, to_device

from .base import RolloutEngine, RolloutOutput, SamplingParams


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  suppressed_ids=None) -> torch.Tensor:
    """[B, V] float32 logits to sample from: suppressed ids at -inf, divided by the temperature, then
    top-k and nucleus (top-p) filtering (the smallest set of tokens whose mass reaches top_p, at
    least one), in ``generate``'s order."""
    out = suppress(logits.float() / temperature, suppressed_ids, inplace=True)
    if top_k and top_k < out.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1)  # ascending, as in transformers' TopPLogitsWarper
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[:, -1] = False
        out = out.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return out


def sample_tokens(logits: torch.Tensor, greedy: bool = False) -> torch.Tensor:
    """[B] one token per row of filtered logits: argmax, or an exact categorical sample drawn by the
    inverse CDF: the first token whose cumulative probability exceeds u * total, u ~ U[0, 1).

    One uniform per row instead of one random number per vocabulary entry (the exponential race, or
    ``torch.multinomial``): about 10x cheaper per decoding step on a CPU. A token of probability 0
    (filtered or suppressed) is never drawn: its cumulative sum equals its predecessor's, so it is
    never the first to exceed u * total (``right=True``); a row whose float sum falls short of
    u * total takes its argmax.
    """
    if greedy:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    token = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return torch.where(token < cdf.shape[-1], token, probs.argmax(-1))


class SampledTokenLogprobs:
    """A ``generate`` logits processor (duck-typed: ``(input_ids, scores) -> scores``): sets the suppressed ids
    to -inf and, with ``record``, keeps each sampled token's log-prob under softmax(z / T), one step behind.

    ``generate`` calls it with step t's logits before it samples token t, and with ``input_ids`` ending in
    token t-1: so the processor holds one step's [N, V] log-softmax, reduces it to the token drawn from it on
    the next call, and ``finish(sequences)`` reduces the last one. Memory O(N x V), never O(N x T x V).

    NOTE: it must see the raw logits. ``generate`` runs the processors it builds from the generation config
    first and the sampling warpers (temperature, top-k, top-p) after the caller's processors; with a neutral
    generation config (``reset_generation_config``) it builds none, so ``scores`` are the model's logits.
    """

    def __init__(self, suppressed_ids, temperature: float, record: bool = True):
        self.suppressed, self.temperature, self.record = list(suppressed_ids or []), temperature, record
        self.pending: torch.Tensor | None = None  # [N, V] the last step's log-probs, its token not yet known
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = suppress(scores, self.suppressed, inplace=True)  # generate's own float32 copy of the logits
        if self.record:
            self._take(input_ids[:, -1])
            self.pending = log_softmax_full(scores, None, self.temperature)  # suppressed already
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, tokens[:, None].to(self.pending.device)).squeeze(-1).cpu())
            self.pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[N, T] the log-prob of every generated token (``sequences`` [N, prompt + T]: generate's output)."""
        self._take(sequences[:, -1])
        n = sequences.shape[0]
        return torch.stack(self.steps, 1) if self.steps else torch.zeros(n, 0)


class HFRollout(RolloutEngine):
    def __init__(self, model, processor, batch_size: int = 64, progress: bool = False, decoder: str = "generate",
                 compile_decoder: bool = False):
        self.model, self.processor, self.batch_size, self.progress = model, processor, batch_size, progress
        if decoder not in ("generate", "static"):
            raise ValueError(f"rollout decoder must be generate or static, got {decoder!r}")
        if decoder == "static" and hasattr(getattr(model, "config", None), "vision_config"):
            warnings.warn("rollout.decoder static serves text models; this VL model samples with generate", stacklevel=2)
            decoder = "generate"
        self.decoder, self.compile_decoder, self._step = decoder, compile_decoder, None
        # the config's sampling settings are the only ones: whatever the checkpoint's generation_config.json says
        # (Qwen2.5 instruct: repetition_penalty 1.05, top_k 20 ...) would change the distribution sampled
        # without changing pi_old or the rollout's own log-probs
        reset_generation_config(model)
        if decoder == "static":
            import inspect

            self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def generate(self, prompts, params: SamplingParams) -> RolloutOutput:
        """Samples ``params.n`` responses per prompt, ``batch_size`` sequences per generate call.

        Vision placeholder tokens are suppressed; the returned log-probs (``params.logprobs``; else empty) are
        of the raw logits at the sampling temperature with the same suppression, as the training engine
        computes them.

        NOTE: no call here is collective: under ZeRO-3 the training engine's ``rollout_context`` gathers the
        weights once and removes ZeRO-3's hooks, so ranks may make different numbers of calls (uneven shards,
        an empty one); ``synced_gpus=False`` keeps transformers from pairing decoding steps across ranks.
        """
        from tqdm import tqdm

        proc = self.processor
        expanded = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        out = RolloutOutput([], [], [], [])
        eos = set(proc.eos_token_ids)
        suppressed = proc.suppressed_token_ids
        temp = 1.0 if params.greedy else params.temperature
        with eval_mode(self.model):
            for start in tqdm(range(0, len(expanded), self.batch_size), desc="rollout", leave=False,
                              disable=not self.progress):
                chunk = expanded[start:start + self.batch_size]
                batch = to_device(proc.rollout_batch([p for _, p in chunk]), self.model)
                with torch.no_grad():
                    if self.decoder == "static":
                        seqs, lps = self.static_decode(batch, params, eos, suppressed)
                    else:
                        seqs, lps = self.hf_generate(batch, params, eos, suppressed, temp)
                for row, (idx, _) in enumerate(chunk):
                    ids = seqs[row].tolist()
                    cut = next((k + 1 for k, t in enumerate(ids) if t in eos), None)
                    n_tok = cut if cut is not None else len(ids)
                    out.responses.append(ids[:n_tok])
                    out.logprobs.append(lps[row, :n_tok].tolist() if params.logprobs else [])
                    out.prompt_index.append(idx)
                    out.finished.append(cut is not None)
        return out

    def hf_generate(self, batch, params: SamplingParams, eos: set[int], suppressed: list[int], temp: float):
        """One ``generate`` call: ([N, T] sampled ids, [N, T] their log-probs, or [N, 0] without
        ``params.logprobs``)."""
        width = batch["input_ids"].shape[1]
        record = SampledTokenLogprobs(suppressed, temp, record=params.logprobs)
        kwargs = dict(max_new_tokens=params.max_new_tokens, eos_token_id=sorted(eos), pad_token_id=self.processor.pad_token_id,
                      logits_processor=[record], return_dict_in_generate=True, use_cache=True, synced_gpus=False)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # NOTE: top_k=None would fall back to transformers' global default of 50
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        gen = self.model.generate(**batch, **kwargs)
        seqs = gen.sequences[:, width:].cpu()
        return seqs, record.finish(gen.sequences) if params.logprobs else torch.zeros(len(seqs), 0)

    # -- the static-cache decoder ---------------------------------------------------------------
    def _decode_step(self, ids, attention_mask, position_ids, cache, cache_position):
        # NOTE: transformers >= 5.2x names the cache argument `cache` (`past_key_values` is deprecated)
        key = self._cache_arg
        return self.model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids,
                          cache_position=cache_position, use_cache=True, **{key: cache}).logits[:, -1]

    def _sample_then_step(self, logits, done, eos_ids, mask, position, cache, cache_position, how):
        """Samples each row's next token from ``logits`` (pad once a row is done), then runs the model
        on it: (token [N], done [N], the next logits [N, V]). One function, so that a compiled decoder
        runs the filters and the draw inside the same graph as the model step."""
        greedy, temperature, top_k, top_p, suppressed, pad = how
        token = sample_tokens(filter_logits(logits, temperature, top_k, top_p, suppressed), greedy)
        token = torch.where(done, torch.full_like(token, pad), token)
        done = done | torch.isin(token, eos_ids)
        return token, done, self._decode_step(token[:, None], mask, position, cache, cache_position)

    def decode_step(self):
        """The sample-then-step function, compiled on first use when asked (eager if compilation fails)."""
        if self._step is None:
            self._step = CompiledOrEager(self._sample_then_step, "the decoding step") if self.compile_decoder \
                else self._sample_then_step
        return self._step

    def static_decode(self, batch, params: SamplingParams, eos: set[int], suppressed: list[int]):
        """Left-padded prompts -> ([N, T] sampled ids, pad after EOS; [N, T] their log-probs under the raw
        logits at the sampling temperature, reduced step by step).

        The KV cache is allocated once at prompt width + max_new_tokens (rounded up to 64 so a
        compiled step sees few shapes); the loop ends when every row has emitted an EOS. Each loop
        turn is one call: sample from the last logits, then the model step on the sampled tokens (the
        step after the last token is the one wasted forward).
        """
        from transformers import StaticCache

        ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
        n, width = ids.shape
        steps = params.max_new_tokens
        length = -(-(width + steps) // 64) * 64
        mask = torch.zeros(n, length, dtype=prompt_mask.dtype, device=ids.device)
        mask[:, :width] = prompt_mask
        position = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = StaticCache(config=self.model.config, max_cache_len=length)
        logits = self._decode_step(ids, prompt_mask, position, cache, torch.arange(width, device=ids.device))
        position = position[:, -1:]
        pad = self.processor.pad_token_id
        out_ids = torch.full((n, steps), pad, dtype=torch.long)
        out_lps = torch.zeros(n, steps, dtype=torch.float32)
        temp = 1.0 if params.greedy else params.temperature
        done = torch.zeros(n, dtype=torch.bool, device=ids.device)
        eos_ids = torch.tensor(sorted(eos), device=ids.device)
        cache_positions = torch.arange(width, width + steps, device=ids.device)
        how = (params.greedy, 1.0 if params.greedy else params.temperature, 0 if params.greedy else params.top_k,
               1.0 if params.greedy else params.top_p, tuple(suppressed or ()), pad)
        step = self.decode_step()
        for t in range(steps):
            lps = log_softmax_full(logits, suppressed, temp)
            mask[:, width + t] = 1
            position = position + 1
            token, done, logits = step(logits, done, eos_ids, mask, position, cache, cache_positions[t:t + 1], how)
            out_ids[:, t] = token.cpu()
            out_lps[:, t] = lps.gather(-1, token[:, None]).squeeze(-1).cpu()
            if bool(done.all()):
                break
        return out_ids, out_lps
