"""DeepSpeed training engine: ZeRO stages 0-3, fp32 or bf16, optional CPU offload, gradient
accumulation over any number of micro-batches (unmanaged: ``step()`` is the boundary).

Runs on CPU machines too: DeepSpeed picks its CPU accelerator and the gloo backend. On CUDA the
process group is NCCL, which takes only CUDA tensors: every collective of the trainer goes through
``all_reduce`` / ``all_gather`` here, which move their tensors to ``comm_device`` and the result
back to the caller's device (the one place that knows which device a collective needs).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
from pathlib import Path

import torch

from .base import TrainingEngine, apply_lora, make_optimizer, make_scheduler, merged_copy_for_export, prepare_params


def deepspeed_config(cfg) -> dict:
    zero = {"stage": cfg.zero_stage}
    if cfg.cpu_offload and cfg.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu"}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        # NOTE: the trainer decides how many micro-batches a step has; step() is the boundary.
        "managed_gradient_accumulation": False,
        # NOTE: a huge bound when clipping is off, so DeepSpeed still computes the norm for the logs.
        "gradient_clipping": cfg.grad_clip if cfg.grad_clip is not None else 1e12,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def comm_device(backend: str) -> torch.device:
    """Where collective tensors must live: the process's CUDA device under NCCL, else the CPU (gloo)."""
    if "nccl" in str(backend).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(timeout_s: float = 600.0) -> None:
    """Initialises torch.distributed once (env from the deepspeed launcher, or a 1-process default).
    A collective that waits longer than ``timeout_s`` for a peer raises instead of hanging."""
    import datetime

    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        atexit.register(remove_cpu_allreduce_buffer)
    deepspeed.init_distributed(dist_backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def shutdown_distributed() -> None:
    """Destroys the default process group, for the end of a launched script's ``main``.

    A process that exits with the group alive leaves gloo's worker threads to interpreter finalisation, which
    now and then aborts it after its work is done ("terminate called without an active exception", rc -6;
    pytorch/pytorch#190489): seen once in the default tests (bench_gpu's launched train_mm.py)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cpu_allreduce_buffer() -> Path:
    """The shared-memory file DeepSpeed's CPU accelerator allocates for this rank's all-reduce workspace (about
    66 MB, ``ops/csrc/cpu/comm/shm.cpp``: deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>)."""
    return Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
                               f"{os.environ.get('MASTER_PORT', '')}_{os.environ.get('RANK', '0')}")


def remove_cpu_allreduce_buffer() -> None:
    """At exit: DeepSpeed never unlinks its CPU all-reduce buffer, so every run on a CPU left ~66 MB per rank in
    /dev/shm (a tmpfs: RAM) until the machine filled. The name goes; mappings still held elsewhere stay valid."""
    with contextlib.suppress(OSError):
        cpu_allreduce_buffer().unlink()


@contextlib.contextmanager
def without_zero3_hooks(engine):
    """A ZeRO-3 engine's whole weights, gathered once, with none of ZeRO-3's module hooks installed: forwards in the
    block run no collective, so each rank may run as many as it likes (``generate`` on its own shard of prompts).

    NOTE: DeepSpeed's ``unwrap_model_for_generation`` (what TRL uses) removes the per-module hooks but keeps the
    root module's start-of-forward hook, which while ZeRO re-records its trace (after every re-registration)
    compares the module order across ranks with a collective at every forward: ranks with different numbers of
    decoding steps then fail ("collective mismatch" under gloo) or hang (NCCL). That hook goes too, and comes back
    first in line, as DeepSpeed registers it.
    """
    import deepspeed

    optimizer = engine.optimizer
    offload = getattr(optimizer, "parameter_offload", optimizer)
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        offload.fwd_pre_hook.remove()
        try:
            yield
        finally:
            def start_of_forward(module, *args):
                offload.get_param_coordinator().reset_step()

            offload.fwd_pre_hook = offload.module.register_forward_pre_hook(start_of_forward, prepend=True)
            offload._register_deepspeed_module(offload.module)


class DeepSpeedEngine(TrainingEngine):
    def __init__(self, model_loader, train_cfg, **_):
        import deepspeed
        import torch.distributed as dist

        init_distributed(train_cfg.collective_timeout_s)
        self.cfg, self.model_loader = train_cfg, model_loader
        self.ds_config = deepspeed_config(train_cfg)
        self._hf_ds_config = None
        if train_cfg.zero_stage == 3:
            # Makes from_pretrained partition weights as it loads (kept alive by this reference).
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)
        model = model_loader()
        if train_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = apply_lora(model, train_cfg.lora)
        optimizer = make_optimizer(prepare_params(model, train_cfg), train_cfg)
        # NOTE: the schedule wraps the client optimizer (ZeRO keeps its param_groups); DeepSpeed
        # steps it whenever an optimiser step is applied.
        scheduler = make_scheduler(optimizer, train_cfg)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config)
        self.module = self.engine.module
        self.module.train()
        self._last_norm = None
        if train_cfg.zero_stage == 0 and train_cfg.precision == "fp32":
            # NOTE: DeepSpeed's stage-0 fp32 path clips but drops the norm; keep it for the logs.
            from deepspeed.runtime.utils import clip_grad_norm_

            def clip_and_record():
                self._last_norm = float(clip_grad_norm_(parameters=self.module.parameters(),
                                                        max_norm=self.engine.gradient_clipping(), mpu=self.engine.mpu))

            self.engine.clip_fp32_gradients = clip_and_record
        self.forward_model = self.engine
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.comm_device = comm_device(dist.get_backend())
        self.visual_balance = None
        if self.world_size > 1 and train_cfg.zero_stage >= 1:
            from .visual_balance import VisualBalance, vision_parts

            # every rank runs the vision tower alike in every forward, so text-only and visual micro-batches
            # can meet in one step (the paper's cross-modal setting). NOTE: ZeRO-3 gathers the tower's weights
            # collectively in every forward; ZeRO-1/2 reduce gradients in buckets filled in the order they
            # are ready, so a rank without vision gradients would reduce other buckets than its peers.
            parts = vision_parts(self.module)
            trains = parts is not None and any(p.requires_grad for p in parts[0].parameters())
            if parts is not None and (train_cfg.zero_stage == 3 or trains):
                self.visual_balance = VisualBalance(self.module)

    def all_reduce(self, tensor, op="sum"):
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        out = tensor.detach().to(self.comm_device, copy=True)
        dist.all_reduce(out, op=ops[op])
        return out.to(tensor.device)

    def all_gather(self, tensor):
        import torch.distributed as dist

        dev = self.comm_device
        n = torch.tensor([tensor.shape[0]], device=dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        width = int(max(s.item() for s in sizes))
        padded = torch.zeros((width, *tensor.shape[1:]), dtype=tensor.dtype, device=dev)
        padded[: tensor.shape[0]] = tensor.detach().to(dev)
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [p[: int(s.item())].to(tensor.device) for p, s in zip(parts, sizes)]

    def barrier(self):
        import torch.distributed as dist

        dist.barrier()

    def _all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank."""
        flag = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0])
        return self.all_reduce(flag, "max").item() == 0.0

    def _grads_finite(self) -> bool:
        """Stage 0 only: whether every gradient is finite on every rank, before the optimiser step.

        NOTE: ZeRO 1-3 (DeepSpeed 0.19) take the global norm inside ``step()`` and skip a step whose
        norm is not finite, in fp32 and bf16 alike (``tests/test_engines.py`` checks that the weights
        stay put). Stage 0 steps the client optimiser without looking, so it is checked here first.
        """
        bad = any(p.grad is not None and not torch.isfinite(p.grad).all() for p in self.module.parameters())
        return self._all_finite(torch.tensor([float("nan") if bad else 0.0]))

    def _skip(self, loss: float) -> dict:
        self.engine.zero_grad()
        self.engine.optimizer.zero_grad()
        return {"train/skipped": 1.0, "train/loss": loss, "train/grad_norm": float("nan")}

    def train_step(self, micro_batches, compute_loss):
        total, metrics = 0.0, {}
        # NOTE: every rank must run the same number of backward calls; the trainer pads shards.
        for mb in micro_batches:
            loss, m = compute_loss(self.forward_model, mb)
            if not self._all_finite(loss.detach()):
                return self._skip(float("nan"))
            self.engine.backward(loss, scale_wrt_gas=False)
            total += loss.item()
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / len(micro_batches)
        # each rank's loss is its share of the global mean times the number of ranks (the gradients are
        # averaged over ranks), so the mean over ranks is the global loss, whatever the process count; the
        # micro-batch metrics (the same keys on every rank) are averaged over ranks alike
        keys = sorted(metrics)
        means = self.all_reduce(torch.tensor([total] + [metrics[k] for k in keys], dtype=torch.float64)) / self.world_size
        total, metrics = means[0].item(), dict(zip(keys, means[1:].tolist()))
        if self.cfg.zero_stage == 0 and not self._grads_finite():
            return self._skip(total)
        lr = self.scheduler.get_last_lr()[0]
        self.engine.step()
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is None:
            grad_norm = self._last_norm
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        skipped = 0.0 if self.engine.was_step_applied() and math.isfinite(grad_norm) else 1.0
        return {**metrics, "train/loss": total, "train/grad_norm": grad_norm, "train/lr": lr, "train/skipped": skipped}

    @contextlib.contextmanager
    def rollout_context(self):
        """Whole weights for ``generate``, and nothing collective in it.

        NOTE: under ZeRO-3 each rank holds a shard and ZeRO-3's module hooks gather a module's weights
        collectively whenever it runs. Left installed during generation they re-gather (or at least
        synchronise) at every decoding step, and every rank must then make the same calls in the same order:
        uneven shards, a rank whose prompts were all rejected, or an eval shard one record shorter hang the run.
        So the weights are gathered once and the hooks removed for the duration (``without_zero3_hooks``), then put
        back. The dummy vision calls that keep ZeRO's collectives in step (``VisualBalance``) are off too: there
        are none to keep in step.
        """
        balance = self.visual_balance
        if balance is not None:
            balance.active = False
        try:
            with without_zero3_hooks(self.engine) if self.cfg.zero_stage == 3 else contextlib.nullcontext():
                yield
        finally:
            if balance is not None:
                balance.active = True

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag="engine", save_latest=False)

    def load(self, directory: Path) -> None:
        self.engine.load_checkpoint(str(directory), tag="engine", load_optimizer_states=True,
                                    load_lr_scheduler_states=True)

    def weights_for_sync(self):
        """As the base, with each ZeRO-3 partitioned parameter gathered whole while it is copied."""
        if self.cfg.zero_stage != 3:
            yield from super().weights_for_sync()
            return
        import deepspeed

        for name, p in self.params_for_sync():
            with deepspeed.zero.GatheredParameters([p]):
                yield name, p.detach().clone()

    def export_hf(self, directory: Path, processor) -> None:
        """All ranks call this; rank 0 writes a plain Hugging Face checkpoint (LoRA merged)."""
        if self.cfg.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state = self.module.state_dict() if self.rank == 0 else None
        if self.rank == 0:
            from uniopd_mm.models import whole_weights

            # NOTE: a fresh base model for merging LoRA must load whole, not ZeRO-3-partitioned
            # (partitioning is collective and only rank 0 is here).
            with whole_weights():
                model, state = merged_copy_for_export(self.module, state, self.model_loader)
                model.save_pretrained(directory, state_dict=state)
            processor.save_pretrained(directory)
        self.barrier()
