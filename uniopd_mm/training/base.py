"""The training-engine interface and what both engines share (optimiser, schedule, LoRA, export)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch


def apply_lora(model, lora_cfg):
    """Wraps ``model`` with peft LoRA adapters when enabled (only the adapters train)."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                     target_modules=list(lora_cfg.target_modules), bias="none")
    return get_peft_model(model, cfg)


VISION_PREFIXES = ("visual.", "model.visual.", "base_model.model.model.visual.")


def is_vision_param(name: str) -> bool:
    return any(name.startswith(p) for p in VISION_PREFIXES)


def prepare_params(model, cfg) -> list[dict]:
    """Optimiser parameter groups: the vision tower at ``lr * vision_lr_scale`` (frozen at 0).

    NOTE: a tiny random-init vision tower trained at the language model's learning rate collapses
    (every image token becomes the same vector) long before the model learns to read it; a lower
    scale or a frozen tower avoids that. See docs/training.md, "Training traps".
    """
    vision, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_vision_param(name):
            if cfg.vision_lr_scale == 0.0:
                p.requires_grad_(False)
                continue
            vision.append(p)
        else:
            other.append(p)
    groups = [{"params": other, "lr": cfg.lr}]
    if vision:
        groups.append({"params": vision, "lr": cfg.lr * cfg.vision_lr_scale})
    return groups


def make_optimizer(groups, cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant",
              min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps: linear warm-up over ``warmup_steps``,
    then constant, or a cosine / linear decay that reaches ``min_lr_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def make_scheduler(optimizer, cfg):
    """``lr_factor`` over ``cfg.steps`` optimiser steps (one per training step)."""

    def factor(step: int) -> float:
        return lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.lr_schedule, cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def merged_copy_for_export(model, state_dict, base_loader):
    """The plain Hugging Face model to save: LoRA adapters merged in (peft), else ``model`` itself."""
    if not hasattr(model, "merge_and_unload"):
        return model, state_dict
    fresh = base_loader()
    from peft import get_peft_model

    peft_model = get_peft_model(fresh, model.peft_config["default"])
    if state_dict is not None:
        peft_model.load_state_dict(state_dict)
    else:
        peft_model.load_state_dict(model.state_dict())
    return peft_model.merge_and_unload(), None


def even_micro_batches(n: int, size: int, engine) -> list[list[int]]:
    """Row indices of the micro-batches of ``n`` rows, ``size`` at most each; every rank gets as many
    as the rank with the most.

    NOTE: ZeRO gathers and reduces collectively in every forward and backward, so ranks must run the
    same number of them: a rank with fewer rows runs dummy micro-batches ``[-1]`` (the caller forwards
    row 0 with an all-zero loss mask).
    """
    chunks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    count = int(engine.all_reduce(torch.tensor([len(chunks)]), "max").item())
    return chunks + [[-1]] * (count - len(chunks))


def micro_batch_rows(rows: list[int]) -> tuple[list[int], bool]:
    """(the rows to forward, whether they count) of a micro-batch from ``even_micro_batches``: a padding
    micro-batch ``[-1]`` forwards row 0, and its loss mask must be all zero."""
    real = [r for r in rows if r >= 0]
    return real or [0], bool(real)


def gather_rows(engine, tensors: list[torch.Tensor | None]) -> tuple[list[torch.Tensor | None], slice]:
    """Every rank's rows of each tensor (None stays None), in rank order, and the slice of them that is this
    rank's. The first tensor must be given.

    Tensors of two or more dimensions are padded with zeros along dim 1 to the widest rank's width of that
    tensor (the responses of each rank are padded to its own longest); cut back with ``x[rows, :width]``.
    """
    n = len(tensors[0])
    if engine.world_size == 1:
        return list(tensors), slice(0, n)
    sizes = [len(x) for x in engine.all_gather(torch.zeros(n))]
    offset = sum(sizes[: engine.rank])
    widths = engine.all_reduce(torch.tensor([float(x.shape[1]) if x is not None and x.dim() >= 2 else 0.0
                                             for x in tensors]), op="max").tolist()
    out = []
    for x, width in zip(tensors, widths):
        if x is not None and x.dim() >= 2:
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, int(width) - x.shape[1]))
        out.append(None if x is None else torch.cat(engine.all_gather(x)))
    return out, slice(offset, offset + n)


class TrainingEngine:
    """What the trainer needs from a training backend.

    ``module`` is the Hugging Face model (rollouts generate with it); ``forward_model`` is what a
    loss function calls for a forward pass (the DeepSpeed engine, or the module itself).
    """

    module: torch.nn.Module
    forward_model: object
    rank: int = 0
    world_size: int = 1

    def train_step(self, micro_batches: list, compute_loss) -> dict[str, float]:
        """Forward/backward every micro-batch, then one optimiser step.

        ``compute_loss(forward_model, micro_batch) -> (loss, metrics)``; the loss of each micro-batch
        must already be normalised by the global count (see ``algo.loss.aggregate``).
        Returns ``train/grad_norm``, ``train/lr``, ``train/loss`` and ``train/skipped`` (1 when a
        non-finite loss or gradient made the step be skipped).
        """
        raise NotImplementedError

    def params_for_sync(self):
        """The module's named parameters, for a rollout engine that holds its own copy (vLLM)."""
        if hasattr(self.module, "merge_and_unload"):
            raise NotImplementedError("syncing LoRA adapters into vLLM is not supported; use the hf rollout with LoRA")
        return self.module.named_parameters()

    def weights_for_sync(self):
        """``(name, tensor)`` of every weight with Hugging Face names, one at a time."""
        for name, p in self.params_for_sync():
            yield name, p.detach()

    def budget_reached(self, seconds: float, budget: float | None) -> bool:
        """Whether ``seconds`` of training reached ``budget`` on any rank (so every rank stops together)."""
        return budget is not None and self.all_reduce(torch.tensor([seconds]), "max").item() >= budget

    @contextlib.contextmanager
    def rollout_context(self):
        """Full weights available to ``module.generate`` (gathers ZeRO-3 shards); a no-op otherwise."""
        yield

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (lengths along dim 0 may differ), in rank order."""
        return [tensor]

    def barrier(self) -> None:
        return None

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    def load(self, directory: Path) -> None:
        raise NotImplementedError

    def export_hf(self, directory: Path, processor) -> None:
        raise NotImplementedError
