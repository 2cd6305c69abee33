"""The outputs of a frozen vision tower, kept per image / video (``train.vision_cache``).

A frozen tower (a teacher's; the student's with ``train.vision_lr_scale: 0``) gives every image the same features
at every step, yet each rollout, teacher call and update runs it again. The cache wraps the model's own
``get_image_features`` / ``get_video_features`` (so ``generate``, the full forward and the shared-prompt forward all
go through it): the concatenated pixels are split per image by ``grid_thw``, each image is keyed by its grid and
an xxh3-128 digest of its pixels, and only the images not seen before run through the tower (their merged
features kept, least recently used out first). Each image's features depend on its own patches alone (the Qwen-VL
towers attend within an image), so the result is the uncached one's to float rounding.

Qwen2-VL and Qwen2.5-VL only: Qwen3-VL's tower also returns per-layer deepstack features. Not under ZeRO-3,
whose partitioned tower must run on every rank in step.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict

import torch

FAMILIES = ("qwen2_vl", "qwen2_5_vl")  # config.model_type of the models whose features are the merged outputs alone


class VisionFeatureCache:
    """Installed on the inner VL model by :func:`cache_frozen_vision`; ``hits`` / ``misses`` count images."""

    def __init__(self, inner, limit: int, max_bytes: int | None = None):
        if limit < 1:
            raise ValueError(f"vision cache limit must be >= 1, got {limit}")
        self.limit, self.entries, self.hits, self.misses = limit, OrderedDict(), 0, 0
        self.max_bytes, self.nbytes = max_bytes, 0
        for modality, names in (("image", ("pixel_values", "image_grid_thw")),
                                ("video", ("pixel_values_videos", "video_grid_thw"))):
            name = f"get_{modality}_features"
            setattr(inner, name, self.wrap(getattr(inner, name), modality, *names))

    def wrap(self, compute, modality: str, pixels_name: str, grid_name: str):
        """``compute`` through the cache, with its signature (``generate`` reads it to pick its arguments)."""

        @functools.wraps(compute)
        def cached(*args, **kwargs):
            pixels = args[0] if args else kwargs.pop(pixels_name)
            grid_thw = args[1] if len(args) > 1 else kwargs.pop(grid_name, None)
            return self.features(compute, modality, pixels, grid_thw, **kwargs)

        cached.cache = self
        return cached

    def features(self, compute, modality: str, pixels: torch.Tensor, grid_thw: torch.Tensor | None = None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        import xxhash

        if grid_thw is None:
            return compute(pixels, grid_thw, **kwargs)
        sizes = grid_thw.prod(-1).tolist()
        parts = pixels.split(sizes)
        host = pixels.detach().cpu().contiguous().view(torch.uint8).numpy()  # the bytes of any dtype, per patch row
        keys, start = [], 0
        for grid, n in zip(grid_thw.tolist(), sizes):
            keys.append((modality, tuple(grid), xxhash.xxh3_128_digest(host[start:start + n])))
            start += n
        first = {}  # each image not seen before, once (a rollout group repeats its prompt's images)
        for i, k in enumerate(keys):
            if k not in self.entries:
                first.setdefault(k, i)
        missing = list(first.values())
        if missing:
            kwargs["return_dict"] = True
            out = compute(torch.cat([parts[i] for i in missing]), grid_thw[missing], **kwargs).pooler_output
            for i, features in zip(missing, out):
                # NOTE: a clone: the tower returns views of one batch tensor, and a view would pin the whole batch
                kept = features.detach().clone()
                self.entries[keys[i]] = kept
                self.nbytes += kept.numel() * kept.element_size()
        self.misses += len(missing)  # distinct images computed; the rest of the call's images are hits
        self.hits += len(keys) - len(missing)
        for k in keys:
            self.entries.move_to_end(k)
        result = tuple(self.entries[k] for k in keys)
        while len(self.entries) > self.limit or (self.max_bytes is not None and self.nbytes > self.max_bytes
                                                 and len(self.entries) > 1):
            _, old = self.entries.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
        return BaseModelOutputWithPooling(pooler_output=result)


def cache_frozen_vision(model, limit: int, who: str = "model", partitioned: bool = False,
                        max_bytes: int | None = None) -> VisionFeatureCache | None:
    """Caches the vision features of ``model`` (a Hugging Face VL model, inside a DeepSpeed engine or not) for
    ``limit`` images / videos and at most ``max_bytes`` of features; None, with a warning naming why, where that would be wrong (a tower that trains,
    Qwen3-VL, a ``partitioned`` ZeRO-3 model) or is moot (``limit`` 0, a text model)."""
    from .scoring import hf_model

    hf = hf_model(model)
    inner = getattr(hf, "model", None)
    visual = getattr(inner, "visual", None)
    if not limit or visual is None:
        return None
    why = None
    if getattr(hf.config, "model_type", None) not in FAMILIES:
        why = f"its model type {getattr(hf.config, 'model_type', None)!r} is not one of {list(FAMILIES)}"
    elif any(p.requires_grad for p in visual.parameters()):
        why = "its vision tower trains (train.vision_lr_scale > 0)"
    elif partitioned:
        why = "ZeRO-3 partitions the tower, which must then run on every rank in step"
    if why:
        warnings.warn(f"train.vision_cache: the {who}'s vision features are not cached: {why}", stacklevel=2)
        return None
    return VisionFeatureCache(inner, limit, max_bytes)
