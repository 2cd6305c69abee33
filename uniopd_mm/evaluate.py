"""Greedy evaluation on a held-out set: accuracy overall, per domain, and per slice (``meta.slice``)."""

from __future__ import annotations

from collections import defaultdict

from .data import DataError
from .rollout.base import SamplingParams
from .verifiers import verify


def evaluate(rollout, processor, samples, max_new_tokens: int = 64, all_reduce=None,
             rank: int = 0, world_size: int = 1, predictions: list | None = None, on_error=None) -> dict[str, float]:
    """Greedy-decodes this rank's shard of ``samples``, verifies, and sums counts across ranks.

    Returns ``eval/accuracy`` (over all records; unknown counts as wrong), ``eval/accuracy/<domain>``,
    ``eval/slice/<name>`` for records whose ``meta.slice`` names a slice of the test set (a benchmark's blind
    spot, say), and ``eval/rejected`` (records whose prompt could not be built; each is passed to ``on_error``).
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
    correct, total = defaultdict(float), defaultdict(float)  # per metric name

    def names(s) -> list[str]:
        slice_name = (s.meta or {}).get("slice")
        return [f"eval/accuracy/{s.domain}"] + ([f"eval/slice/{slice_name}"] if slice_name else [])

    if prompts:
        out = rollout.generate(prompts, SamplingParams(n=1, max_new_tokens=max_new_tokens, greedy=True, logprobs=False))
        for s, resp in zip(kept, out.responses):
            text = processor.decode(resp)
            ok = verify(s, text)
            for name in names(s):
                total[name] += 1
                correct[name] += float(ok is True)
            if predictions is not None:
                predictions.append({"id": s.id, "domain": s.domain, "response": text, "answer": s.answer, "correct": ok})
    # records whose prompt could not be built count against accuracy
    kept_ids = {id(s) for s in kept}
    for s in shard:
        if id(s) not in kept_ids:
            for name in names(s):
                total[name] += 1
    keys = sorted({name for s in samples for name in names(s)})  # every rank sees every sample: the same order
    vec = torch.tensor([[correct[k], total[k]] for k in keys] + [[float(len(shard) - len(kept)), 0.0]],
                       dtype=torch.float64)
    if all_reduce is not None:
        vec = all_reduce(vec)
    rejected, vec = vec[-1, 0].item(), vec[:-1]
    metrics = {k: (vec[i, 0] / vec[i, 1]).item() if vec[i, 1] > 0 else 0.0 for i, k in enumerate(keys)}
    domain_rows = [i for i, k in enumerate(keys) if k.startswith("eval/accuracy/")]
    vec = vec[domain_rows]
    metrics["eval/accuracy"] = (vec[:, 0].sum() / vec[:, 1].sum().clamp(min=1)).item()
    metrics["eval/rejected"] = rejected
    return metrics
