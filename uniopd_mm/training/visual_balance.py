"""Mixed text and visual prompts under ZeRO-3 on several processes: every rank runs the vision tower
the same number of times in every forward.

ZeRO-3 keeps each weight partitioned across ranks and gathers a module's weights collectively when the
module runs (and reduce-scatters their gradients in the backward). A rank whose micro-batch is text
only would skip the vision tower while another rank runs it, and both would wait on each other's
collectives for ever. ``VisualBalance`` hooks the model so that, before the language model runs, the
vision tower has run exactly ``calls`` times in this forward: the images' call and the videos' call
(real ones where the batch has them), topped up with calls on a dummy input of one merged patch,
whose outputs enter the model where the real ones do, multiplied by zero. The module sequence, and so the sequence of
collectives, is then the same on every rank; the dummy adds zero to every value and every gradient.
"""

from __future__ import annotations

import torch

from uniopd_mm.models import hf_model

# Qwen2-VL, Qwen2.5-VL and Qwen3-VL call their vision tower at most once for a batch's images and once
# for its videos
CALLS_PER_FORWARD = 2


def vision_parts(model):
    """(vision tower, language model) of a Qwen-VL model, plain, PEFT-wrapped or in a DeepSpeed engine;
    None for a text model."""
    base = getattr(hf_model(model), "model", None)
    visual, language = getattr(base, "visual", None), getattr(base, "language_model", None)
    return (visual, language) if visual is not None and language is not None else None


def dummy_visual_call(visual) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs ``visual`` on one merged patch of zeros: (its merged embeddings, its deepstack features, empty
    for a tower without them), the outputs the model's own visual path uses."""
    cfg = visual.config
    merge = cfg.spatial_merge_size
    p = next(visual.parameters())
    pixels = torch.zeros(merge * merge, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2,
                         dtype=p.dtype, device=p.device)
    out = visual(pixels, grid_thw=torch.tensor([[1, merge, merge]], device=p.device))
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled, list(getattr(out, "deepstack_features", None) or [])
    if isinstance(out, tuple):  # older transformers: (embeddings, deepstack features)
        return out[0], list(out[1] or []) if len(out) > 1 else []
    return out, []


def extends_cache(kwargs: dict) -> bool:
    """Whether a language-model call continues a non-empty KV cache: a decoding step, or the response half of a
    shared-prompt forward. Such a call never runs the vision tower on any rank, so there is nothing to balance."""
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    return cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0


class VisualBalance:
    """Hooks on a VL model's vision tower (count its calls) and language model (top them up to
    ``calls`` with dummy calls, then reset the count). ``active`` switches the top-up off, e.g. while
    the weights are gathered whole for a rollout and no forward runs a collective; a call that continues a KV
    cache (a decoding step) is never topped up."""

    def __init__(self, model, calls: int = CALLS_PER_FORWARD):
        parts = vision_parts(model)
        if parts is None:
            raise ValueError("VisualBalance needs a vision-language model (a .model.visual and .model.language_model)")
        self.visual, language = parts
        self.calls, self.count, self.active, self._in_dummy = calls, 0, True, False
        self.dummy_calls = 0  # how many dummy calls ran, for tests and logs
        # NOTE: transformers >= 5.2x's generate encodes the images before the prefill forward, outside it, on
        # the ranks that have images only. Without ``mm_encoder_outputs`` support it passes the pixels to the
        # prefill forward (and drops them after it), where the calls are counted and balanced.
        self._hf = hf_model(model)
        if hasattr(self._hf, "_supports_mm_encoder_outputs"):
            self._hf._supports_mm_encoder_outputs = lambda: False
        self._hooks = [self.visual.register_forward_hook(self._counted),
                       # NOTE: prepend, so the top-up runs before DeepSpeed's own pre-forward hook on the language
                       # model: the module order (and so the collectives' order) is then the same on every rank
                       language.register_forward_pre_hook(self._top_up, with_kwargs=True, prepend=True)]

    def _counted(self, module, args, output):
        if not self._in_dummy:
            self.count += 1

    def _top_up(self, module, args, kwargs):
        missing, self.count = self.calls - self.count, 0
        if missing < 0:
            raise RuntimeError(f"the vision tower ran {self.calls - missing} times in one forward; VisualBalance "
                               f"expects at most {self.calls}")
        if not self.active or missing == 0 or extends_cache(kwargs):
            return None
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise RuntimeError("VisualBalance: the language model was called without inputs_embeds")
        self._in_dummy = True
        try:
            outs = [dummy_visual_call(self.visual) for _ in range(missing)]
        finally:
            self._in_dummy = False
        self.dummy_calls += missing
        # NOTE: DeepSpeed records a module in the backward once per output that receives a gradient, and
        # checks that every rank recorded the same modules in the same order: each dummy output goes
        # where the model sends the real one (embeddings into the input embeddings; Qwen3-VL's deepstack
        # features into the language model's deepstack inputs), multiplied by zero.
        zero = sum(pooled.sum() for pooled, _ in outs) * 0.0
        kwargs = {**kwargs, "inputs_embeds": embeds + zero.to(embeds.dtype)}
        layers = len(outs[0][1])
        if layers:
            extra = [sum(deep[i].sum() for _, deep in outs) * 0.0 for i in range(layers)]
            real = kwargs.get("deepstack_visual_embeds")
            if real is None:  # text only: an empty visual position mask and empty deepstack inputs
                kwargs["visual_pos_masks"] = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
                kwargs["deepstack_visual_embeds"] = [embeds.new_zeros(0, embeds.shape[-1]) + z.to(embeds.dtype)
                                                     for z in extra]
            else:
                kwargs["deepstack_visual_embeds"] = [r + z.to(r.dtype) for r, z in zip(real, extra)]
        return args, kwargs

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hf.__dict__.pop("_supports_mm_encoder_outputs", None)
