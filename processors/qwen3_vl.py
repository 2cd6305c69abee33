"""Qwen3-VL: 16-pixel patches, and the video frame metadata (sampled frame indices and fps) that
the processor needs to write each frame's timestamp into the prompt."""

from __future__ import annotations

from . import qwen2_vl


class Processor(qwen2_vl.Processor):
    family = "qwen3_vl"
    image_patch_size = 16
    video_metadata_for_vllm = True
