"""The update stage's loss on one micro-batch: the student's forward, then the algo/ loss (RECIPE 5).

``targets`` holds the step's [B, T] tensors (rows of the whole rank batch): ``old_logprobs``,
``advantages``, ``loss_mask``, ``ref_logprobs`` (the KL reference, or None) and, for the distribution
losses, the teacher's ``full_logprobs`` or ``topk_ids`` / ``topk_logprobs``.
"""

from __future__ import annotations

import torch

from .algo.loss import aggregate, distribution_loss, kl_penalty, ppo_clip_loss, renormalise_topk
from .models import model_device, response_logprobs


def global_normalizer(loss_mask: torch.Tensor, aggregation: str, all_reduce, world_size: int) -> float:
    """The global count the loss divides by, per rank (gradients are averaged over ranks): tokens for
    ``token_mean``, rollouts with a counted token otherwise."""
    local = loss_mask.sum() if aggregation == "token_mean" else (loss_mask.sum(-1) > 0).sum().float()
    return max(all_reduce(local.reshape(1).float()).item(), 1.0) / world_size


def micro_batch_loss(model, batch: dict, take: list[int], counts: bool, targets: dict, algo, *, temperature: float,
                     logprob_chunk: int, share_prompts: bool, suppressed_ids, normalizer: float):
    """(loss, metrics) of rows ``take`` of ``targets``; ``counts`` False (a padding micro-batch that keeps the
    ranks in step) gives a zero-weight loss that still runs the forward and backward."""
    width = batch["responses"].shape[1]
    device = model_device(model)

    def rows(x):
        return x[take, :width].to(device)

    mask = rows(targets["loss_mask"]) * (1.0 if counts else 0.0)
    out = response_logprobs(model, batch, suppressed_ids, temperature, logprob_chunk,
                            with_entropy=algo.entropy_coef > 0, with_full=algo.loss != "pg", share_prompts=share_prompts)
    student_logprobs = out["logprobs"]
    metrics = {}
    if algo.loss == "pg":
        loss, st = ppo_clip_loss(student_logprobs, rows(targets["old_logprobs"]), rows(targets["advantages"]), mask,
                                 algo.clip_low, algo.clip_high, algo.aggregation, normalizer)
        metrics.update({"train/clip_fraction": st["clip_fraction"].item(), "train/approx_kl": st["approx_kl"].item()})
    else:
        if algo.distill_support == "full":
            student_dist, teacher_dist = out["full_logprobs"], rows(targets["full_logprobs"])
        else:
            ids = rows(targets["topk_ids"])
            student_dist = renormalise_topk(out["full_logprobs"].gather(-1, ids))
            teacher_dist = renormalise_topk(rows(targets["topk_logprobs"]))
        loss = aggregate(distribution_loss(student_dist, teacher_dist, algo.loss, algo.jsd_beta), mask, algo.aggregation, normalizer)
    if algo.kl_coef > 0:
        kl = kl_penalty(student_logprobs, rows(targets["ref_logprobs"]), algo.kl_estimator)
        loss = loss + algo.kl_coef * aggregate(kl, mask, algo.aggregation, normalizer)
    if algo.entropy_coef > 0:
        entropy = aggregate(out["entropy"], mask, algo.aggregation, normalizer)
        loss = loss - algo.entropy_coef * entropy
        metrics["train/entropy"] = entropy.item()
    return loss, metrics
