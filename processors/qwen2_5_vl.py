"""Qwen2.5-VL: as Qwen2-VL; the sampled frame rate reaches the processor, which returns
``second_per_grid_ts`` (seconds per temporal patch) for the model's absolute-time rope."""

from __future__ import annotations

from . import qwen2_vl


class Processor(qwen2_vl.Processor):
    family = "qwen2_5_vl"
