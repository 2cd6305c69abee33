"""Qwen2.5-VL: as Qwen2-VL, with the sampled frames' metadata (fps, frame indices): the processor derives
``second_per_grid_ts`` (seconds per temporal patch, for the model's absolute-time rope) from it.

NOTE: without metadata transformers 5.2x ignores the ``fps`` keyword and assumes 24 fps, so every
video got ``second_per_grid_ts`` 2/24 whatever its frame rate; vLLM refuses a Qwen2.5-VL video
without metadata."""

from __future__ import annotations

from . import qwen2_vl


class Processor(qwen2_vl.Processor):
    family = "qwen2_5_vl"
    video_metadata_for_vllm = True
