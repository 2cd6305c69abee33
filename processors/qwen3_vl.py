"""Qwen3-VL: 16-pixel patches, and the video frame metadata (sampled frame indices and fps) that
the processor needs to write each frame's timestamp into the prompt."""

from __future__ import annotations

from . import qwen2_vl


class Processor(qwen2_vl.Processor):
    family = "qwen3_vl"
    image_patch_size = 16
    video_metadata = True

    def processor_kwargs(self, images, videos, video_kwargs) -> dict:
        if not videos:
            return {"images": images, "videos": None, "do_resize": False}
        frames, metadata = zip(*videos)
        kwargs = {"images": images, "videos": list(frames), "video_metadata": list(metadata),
                  "do_resize": False, **(video_kwargs or {})}
        # NOTE: qwen-vl-utils has already sized the frames (do_resize False), so transformers' per-frame
        # pixel cap changes nothing; saying so silences its warning where the option exists (5.2x)
        if hasattr(getattr(self.processor, "video_processor", None), "cap_pixels_per_frame"):
            kwargs["cap_pixels_per_frame"] = False
        return kwargs
