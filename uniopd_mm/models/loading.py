"""Loading models and processors from a :class:`ModelConfig` (any Hugging Face checkpoint path): the
DeepSpeed ZeRO-3 workaround for frozen models, torch.compile with an eager fallback, devices."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from ..config import ModelConfig


@contextlib.contextmanager
def whole_weights():
    """Loads inside this block are never ZeRO-3-partitioned (frozen teachers, reference models).

    NOTE: while the DeepSpeed engine holds an HfDeepSpeedConfig with stage 3, transformers'
    from_pretrained partitions every model it loads; a frozen model must stay whole.
    """
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    obj = ref() if ref is not None else None
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if obj is not None:
            hf_ds.set_hf_deepspeed_config(obj)


def check_checkpoint(path: str) -> None:
    """A path that can only be a local folder (more than ``namespace/name``, or starting with ``.`` or ``/``) must
    exist: say so, instead of letting the hub client call it a malformed repository id."""
    p = Path(str(path))
    local = len(p.parts) > 2 or str(path).startswith((".", "/"))
    if local and not p.exists():
        hint = " (the tiny configs read artifacts/ that `make models data` builds)" if "artifacts" in p.parts else ""
        raise FileNotFoundError(f"no checkpoint folder at {path}{hint}")


def load_model(cfg: ModelConfig, device: str = "cpu", frozen: bool = False):
    """The model class comes from the configured family, never from sniffing the checkpoint.

    ``frozen=True``: eval mode, no gradients, whole weights even under ZeRO-3.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    check_checkpoint(cfg.path)

    cls = AutoModelForCausalLM if cfg.family == "text" else AutoModelForImageTextToText
    with whole_weights() if frozen else contextlib.nullcontext():
        model = cls.from_pretrained(cfg.path, dtype=getattr(torch, cfg.dtype))  # dtype: a Literal of torch's names
    if frozen:
        model.requires_grad_(False).eval()
    reset_generation_config(model)
    return model.to(device)


# the generation_config.json fields a run keeps: which tokens end and pad a sequence; never how to sample
KEPT_GENERATION_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def reset_generation_config(model) -> dict:
    """Replaces ``model.generation_config`` with a neutral one that keeps only the special token ids, so that
    ``generate`` samples from exactly what the experiment config says; returns the checkpoint's sampling settings
    it dropped (for a log line).

    NOTE: ``generate`` starts from the checkpoint's ``generation_config.json`` and applies every field a call does
    not override: Qwen2.5 instruct checkpoints ship ``repetition_penalty: 1.05`` (and ``top_k: 20``, ``top_p:
    0.8``), Qwen2-VL ``top_k: 1`` and ``top_p: 0.001``. Neither pi_old nor the rollout's own log-probs see them,
    so samples would be drawn off the policy the loss assumes. Evaluation is greedy or names its own settings.
    """
    from transformers import GenerationConfig

    old = getattr(model, "generation_config", None)
    if old is None:
        return {}
    kept = {k: getattr(old, k, None) for k in KEPT_GENERATION_FIELDS if getattr(old, k, None) is not None}
    dropped = {k: v for k, v in old.to_diff_dict().items() if k not in kept and k != "transformers_version"}
    model.generation_config = GenerationConfig(**kept)
    return dropped


class CompiledOrEager:
    """``torch.compile(fn)`` that can never cost a run: ``torch.compile`` is lazy, so a missing C++
    compiler or an unsupported op only shows at a call. When the compiled call raises, ``fn`` runs
    eagerly on the same inputs: if that works, the compiler was at fault, a warning says so and every
    later call is eager; if it raises too, the input was (its error propagates, compilation stays on).
    """

    def __init__(self, fn, what: str, **compile_kwargs):
        self.fn, self.what = fn, what
        self.compiled = torch.compile(fn, **compile_kwargs)

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.fn(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - decided below by the eager call
            out = self.fn(*args, **kwargs)
            warnings.warn(f"torch.compile of {self.what} failed ({type(e).__name__}: {e}); running it eagerly",
                          stacklevel=2)
            self.compiled = None
            return out


def load_processor(cfg: ModelConfig):
    from processors import make_processor

    check_checkpoint(cfg.path)

    return make_processor(cfg.family, cfg.path, view=cfg.view, options=cfg.processor,
                          chat_template_kwargs=cfg.chat_template_kwargs)


def frozen_config(path, family: str, processor_options: dict | None = None) -> ModelConfig:
    """The ModelConfig of a checkpoint outside any experiment config (eval, demo, scripts)."""
    from ..config_base import from_dict

    return from_dict(ModelConfig, {"path": str(path), "family": family, "processor": processor_options or {}},
                     prefix="model")


def load_frozen(path, family: str, processor_options: dict | None = None):
    """(frozen model, processor) of a checkpoint outside any experiment config (eval, demo, scripts)."""
    cfg = frozen_config(path, family, processor_options)
    return load_model(cfg, frozen=True), load_processor(cfg)


@contextlib.contextmanager
def eval_mode(model):
    """``model`` in eval mode for the block, its previous mode restored after.

    NOTE: the no-grad student passes (pi_old, rollouts) run in eval mode: under gradient checkpointing a layer in
    train mode may drop the KV cache (transformers versions differ on whether ``no_grad`` keeps it), which the
    shared-prompt forward and ``generate`` need."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model) -> torch.device:
    """Where ``model`` computes (a DeepSpeed engine, a PEFT wrapper or a plain module)."""
    return getattr(model, "device", None) or next(model.parameters()).device


def to_device(batch: dict, model) -> dict:
    """Moves a batch's tensors to the model's device (a no-op on CPU)."""
    device = model_device(model)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

