"""Greedy evaluation on a held-out set: accuracy overall and per domain."""

from __future__ import annotations

from collections import defaultdict

from .data import DataError
from .rollout.base import SamplingParams
from .verifiers import verify


def evaluate(rollout, processor, samples, max_new_tokens: int = 64, all_reduce=None,
             rank: int = 0, world_size: int = 1, predictions: list | None = None, on_error=None) -> dict[str, float]:
    """Greedy-decodes this rank's shard of ``samples``, verifies, and sums counts across ranks.

    Returns ``eval/accuracy`` (over all records; unknown counts as wrong), ``eval/accuracy/<domain>``
    and ``eval/rejected`` (records whose prompt could not be built; each is passed to ``on_error``).
    ``predictions`` (a list), when given, receives one dict per record.
    """
    import torch

    shard = samples[rank::world_size]
    prompts, kept = [], []
    for s in shard:
        try:
            prompts.append(processor.encode_prompt(s))
            kept.append(s)
        except DataError as err:
            if on_error is not None:
                on_error(err)
            continue
    correct, total = defaultdict(float), defaultdict(float)
    if prompts:
        out = rollout.generate(prompts, SamplingParams(n=1, max_new_tokens=max_new_tokens, greedy=True))
        for s, resp in zip(kept, out.responses):
            text = processor.decode(resp)
            ok = verify(s, text)
            total[s.domain] += 1
            correct[s.domain] += float(ok is True)
            if predictions is not None:
                predictions.append({"id": s.id, "domain": s.domain, "response": text, "answer": s.answer, "correct": ok})
    # records whose prompt could not be built count against accuracy
    kept_ids = {id(s) for s in kept}
    for s in shard:
        if id(s) not in kept_ids:
            total[s.domain] += 1
    domains = sorted({s.domain for s in samples})
    vec = torch.tensor([[correct[d], total[d]] for d in domains] + [[float(len(shard) - len(kept)), 0.0]],
                       dtype=torch.float64)
    if all_reduce is not None:
        vec = all_reduce(vec)
    rejected, vec = vec[-1, 0].item(), vec[:-1]
    metrics = {f"eval/accuracy/{d}": (vec[i, 0] / vec[i, 1]).item() if vec[i, 1] > 0 else 0.0
               for i, d in enumerate(domains)}
    metrics["eval/accuracy"] = (vec[:, 0].sum() / vec[:, 1].sum().clamp(min=1)).item()
    metrics["eval/rejected"] = rejected
    return metrics
