"""The configuration tree of an experiment: one YAML file, dotted overrides on the command line.

    cfg = load_config("scripts/configs/tiny_qwen2_vl.yaml", ["student.path=/my/model"])

Run ``python -m uniopd_mm.config`` to print every field with its default and documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config_base import ConfigError, cfg, deep_merge, describe, from_dict, load_yaml, parse_overrides

Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "text"]


@dataclass(kw_only=True)
class ProcessorConfig:
    image_min_pixels: int | None = cfg(None, "min pixels per image after resizing (None: qwen-vl-utils default)", range=(1, None))
    image_max_pixels: int | None = cfg(None, "max pixels per image after resizing (None: qwen-vl-utils default)", range=(1, None))
    video_min_pixels: int | None = cfg(None, "min pixels per video frame (None: qwen-vl-utils default)", range=(1, None))
    video_max_pixels: int | None = cfg(None, "max pixels per video frame (None: qwen-vl-utils default)", range=(1, None))
    video_total_pixels: int | None = cfg(None, "pixel budget of a whole video (None: qwen-vl-utils default)", range=(1, None))
    fps: float | None = cfg(2.0, "frames sampled per second of video", range=(0.01, None))
    min_frames: int | None = cfg(None, "fewest frames sampled from a video", range=(2, None))
    max_frames: int | None = cfg(None, "most frames sampled from a video", range=(2, None))
    max_prompt_tokens: int | None = cfg(None, "a longer prompt is rejected as PromptTooLong", range=(1, None))

    def __post_init__(self):
        for lo, hi in (("image_min_pixels", "image_max_pixels"), ("video_min_pixels", "video_max_pixels"),
                       ("min_frames", "max_frames")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ConfigError(f"{lo}: {a} exceeds {hi}={b}")


@dataclass(kw_only=True)
class ModelConfig:
    path: str = cfg(help="Hugging Face checkpoint directory or hub id of the model")
    family: Family = cfg(help="processor family: qwen2_vl, qwen2_5_vl, qwen3_vl or text (any causal LM)")
    view: Literal["pixels", "text"] | None = cfg(
        None, "what the model reads of a visual record: its pixels or its text_view (None: pixels for VL families, text for text)")
    dtype: Literal["float32", "bfloat16", "float16"] = cfg("float32", "weights dtype when loaded")
    chat_template_kwargs: dict = cfg(help="extra arguments to apply_chat_template (e.g. enable_thinking: false)", factory=dict)
    processor: ProcessorConfig = cfg(help="pixel budgets, frame sampling and prompt length", factory=ProcessorConfig)

    def __post_init__(self):
        if self.family == "text" and self.view == "pixels":
            raise ConfigError("view: a text model cannot read pixels; use view: text (or leave it unset)")
        if self.view is None:
            self.view = "text" if self.family == "text" else "pixels"


@dataclass(kw_only=True)
class DataConfig:
    train_path: str = cfg(help="training JSONL in the sample schema (see README)")
    test_path: str | None = cfg(None, "held-out JSONL for evaluation")
    strict: bool = cfg(False, "stop at the first bad record instead of skipping it into the rejects file")
    verify_media: bool = cfg(True, "decode every image and open every video when loading")
    rejects_path: str | None = cfg(None, "rejects JSONL (default: <output_dir>/rejects.jsonl)")


@dataclass(kw_only=True)
class Config:
    name: str = cfg("run", "experiment name; outputs go to <output_dir>")
    output_dir: str = cfg("runs/run", "where logs, checkpoints and the rejects file are written")
    seed: int = cfg(0, "global random seed", range=(0, None))
    student: ModelConfig = cfg(help="the student model (trained)")
    teacher: ModelConfig = cfg(help="the teacher model (frozen)")
    data: DataConfig = cfg(help="datasets and bad-input policy")

    @property
    def rejects_path(self) -> Path:
        return Path(self.data.rejects_path or Path(self.output_dir) / "rejects.jsonl")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Loads a YAML experiment file, applies dotted overrides, validates every field."""
    data = dict(base or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    data = deep_merge(data, parse_overrides(overrides or []))
    try:
        return from_dict(Config, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None


if __name__ == "__main__":
    for name, tp, default, help_ in describe(Config):
        print(f"{name:42s} {tp:28s} {default!r:14s} {help_}")
