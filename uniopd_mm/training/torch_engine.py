"""Single-process plain torch training engine, on the GPU when there is one."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .base import TrainingEngine, apply_lora, make_optimizer, make_scheduler, merged_copy_for_export, prepare_params


class TorchEngine(TrainingEngine):
    def __init__(self, model_loader, train_cfg, **_):
        self.cfg = train_cfg
        self.model_loader = model_loader
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = model_loader().to(self.device)
        if train_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.module = apply_lora(model, train_cfg.lora)
        self.module.train()
        self.forward_model = self.module
        groups = prepare_params(self.module, train_cfg)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = make_optimizer(groups, train_cfg)
        self.scheduler = make_scheduler(self.optimizer, train_cfg)

    def train_step(self, micro_batches, compute_loss):
        self.optimizer.zero_grad(set_to_none=True)
        total, metrics = 0.0, {}
        for mb in micro_batches:
            loss, m = compute_loss(self.forward_model, mb)
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                return {"train/skipped": 1.0, "train/loss": float("nan")}
            loss.backward()
            total += loss.item()
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / len(micro_batches)
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {"train/skipped": 1.0, "train/loss": total, "train/grad_norm": grad_norm}
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return {**metrics, "train/loss": total, "train/grad_norm": grad_norm, "train/lr": lr, "train/skipped": 0.0}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, directory / "engine.pt")

    def load(self, directory: Path) -> None:
        state = torch.load(directory / "engine.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def export_hf(self, directory: Path, processor) -> None:
        model, state = merged_copy_for_export(self.module, None, self.model_loader)
        model.save_pretrained(directory, state_dict=state)
        processor.save_pretrained(directory)
