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
        return {"images": images, "videos": list(frames), "video_metadata": list(metadata),
                "do_resize": False, **(video_kwargs or {}), **self.no_frame_cap()}
