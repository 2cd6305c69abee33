"""Hugging Face ``generate`` on the training engine's own module (colocated, nothing to sync)."""

from __future__ import annotations

import torch

from uniopd_mm.algo.logprobs import selective_log_softmax
from uniopd_mm.models import to_device

from .base import RolloutEngine, RolloutOutput, SamplingParams


class HFRollout(RolloutEngine):
    def __init__(self, model, processor, batch_size: int = 64, progress: bool = False):
        self.model, self.processor, self.batch_size, self.progress = model, processor, batch_size, progress

    def generate(self, prompts, params: SamplingParams) -> RolloutOutput:
        """Samples ``params.n`` responses per prompt, ``batch_size`` sequences per generate call.

        Vision placeholder tokens are suppressed; the returned log-probs are of the raw logits at
        the sampling temperature with the same suppression, as the training engine computes them.
        """
        from tqdm import tqdm

        proc = self.processor
        expanded = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        out = RolloutOutput([], [], [], [])
        eos = set(proc.eos_token_ids)
        suppressed = proc.suppressed_token_ids
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(range(0, len(expanded), self.batch_size), desc="rollout", leave=False,
                              disable=not self.progress):
                chunk = expanded[start:start + self.batch_size]
                batch = to_device(proc.rollout_batch([p for _, p in chunk]), self.model)
                width = batch["input_ids"].shape[1]
                kwargs = dict(max_new_tokens=params.max_new_tokens, eos_token_id=sorted(eos),
                              pad_token_id=proc.pad_token_id, suppress_tokens=suppressed or None,
                              return_dict_in_generate=True, output_logits=True, use_cache=True)
                if params.greedy:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                else:
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                  top_k=params.top_k or None)
                with torch.no_grad():
                    gen = self.model.generate(**batch, **kwargs)
                seqs = gen.sequences[:, width:].cpu()
                logits = torch.stack(gen.logits, dim=1).cpu()  # [N, T, V] raw logits
                temp = 1.0 if params.greedy else params.temperature
                lps = selective_log_softmax(logits, seqs, suppressed, temp)
                for row, (idx, _) in enumerate(chunk):
                    ids = seqs[row].tolist()
                    cut = next((k + 1 for k, t in enumerate(ids) if t in eos), None)
                    n_tok = cut if cut is not None else len(ids)
                    out.responses.append(ids[:n_tok])
                    out.logprobs.append(lps[row, :n_tok].tolist())
                    out.prompt_index.append(idx)
                    out.finished.append(cut is not None)
        finally:
            self.model.train(was_training)
        return out
