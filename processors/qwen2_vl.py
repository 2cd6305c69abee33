"""Qwen2-VL: the official ``AutoProcessor`` plus ``qwen_vl_utils.process_vision_info``.

The recipe is the one on the Qwen2-VL model card: qwen-vl-utils fetches, resizes and samples the
visuals (pixel budgets and frame rate from :class:`uniopd_mm.config.ProcessorConfig`), then the
processor renders the chat and expands the placeholder tokens. ``do_resize=False`` keeps the pixel
budget in one place (ours), as the Qwen3-VL card does.
"""

from __future__ import annotations

import os

from uniopd_mm.data import CorruptImage, DataError, Sample, UndecodableVideo, check_media

from .base import ModalityProcessor, PromptInputs

# NOTE: torchvision 0.29 removed read_video, qwen-vl-utils' fallback reader; decord must read videos.
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")

_IMAGE_OPTS = {"image_min_pixels": "min_pixels", "image_max_pixels": "max_pixels"}
_VIDEO_OPTS = {
    "video_min_pixels": "min_pixels", "video_max_pixels": "max_pixels", "video_total_pixels": "total_pixels",
    "fps": "fps", "min_frames": "min_frames", "max_frames": "max_frames",
}


class Processor(ModalityProcessor):
    family = "qwen2_vl"
    is_multimodal = True
    image_patch_size = 14
    video_metadata = False  # Qwen2.5-VL and Qwen3-VL take the sampled frames' metadata (their timing)

    def _load(self) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.path)
        self.tokenizer = self.processor.tokenizer

    def vision_messages(self, messages: list[dict]) -> list[dict]:
        """Adds the configured pixel budgets / frame rate to each visual part (a part's own keys win)."""
        out = []
        for m in messages:
            parts = []
            for p in m["content"]:
                if p["type"] in ("image", "video"):
                    table = _IMAGE_OPTS if p["type"] == "image" else _VIDEO_OPTS
                    extra = {v: getattr(self.options, k) for k, v in table.items()
                             if self.options is not None and getattr(self.options, k, None) is not None}
                    p = {**extra, **p}
                parts.append(p)
            out.append({"role": m["role"], "content": parts})
        return out

    def _fetch_visuals(self, messages: list[dict], sample: Sample):
        from qwen_vl_utils import process_vision_info

        try:
            return process_vision_info(
                messages, return_video_kwargs=True, return_video_metadata=self.video_metadata,
                image_patch_size=self.image_patch_size,
            )
        except Exception as e:
            check_media(sample)  # raises the specific CorruptImage / UndecodableVideo when it applies
            cls = UndecodableVideo if sample.videos else CorruptImage
            raise sample.error(cls, f"qwen-vl-utils could not read the visuals: {type(e).__name__}: {e}") from None

    def processor_kwargs(self, images, videos, video_kwargs) -> dict:
        if not videos:
            return {"images": images, "videos": None, "do_resize": False}
        if self.video_metadata:  # qwen-vl-utils gave (frames, metadata) per video
            frames, metadata = zip(*videos)
            return {"images": images, "videos": list(frames), "video_metadata": list(metadata),
                    "do_resize": False, **(video_kwargs or {}), **self.no_frame_cap()}
        kwargs = dict(video_kwargs or {})
        # NOTE: qwen-vl-utils returns one fps per video; transformers 5 takes a single float.
        fps = kwargs.pop("fps", None)
        if fps:
            if len(set(fps)) > 1:
                raise ValueError(f"videos of one prompt were sampled at different rates {fps}")
            kwargs["fps"] = float(fps[0])
        return {"images": images, "videos": videos, "do_resize": False, **kwargs, **self.no_frame_cap()}

    def no_frame_cap(self) -> dict:
        """``cap_pixels_per_frame=False`` where transformers' video processor has the option (5.2x).

        NOTE: qwen-vl-utils has already sized the frames (``do_resize`` is off), so the per-frame pixel
        cap changes nothing; saying so silences the warning transformers prints on every video.
        """
        video_processor = getattr(self.processor, "video_processor", None)
        return {"cap_pixels_per_frame": False} if hasattr(video_processor, "cap_pixels_per_frame") else {}

    def encode_prompt(self, sample: Sample) -> PromptInputs:
        messages = self.messages_for(sample)
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs)
        if self.view == "text":
            images, videos, video_kwargs = None, None, {}
        else:
            images, videos, video_kwargs = self._fetch_visuals(self.vision_messages(messages), sample)
        kwargs = self.processor_kwargs(images, videos, video_kwargs)
        try:
            out = self.processor(text=[text], return_tensors="pt", **kwargs)
        except DataError:
            raise
        except Exception as e:
            raise sample.error(DataError, f"the {self.family} processor failed: {type(e).__name__}: {e}") from None
        ids = out["input_ids"][0].tolist()
        features = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        tt = out.get("mm_token_type_ids")
        ids, text = self.fit_length(sample, ids, text, visual=bool(images or videos))
        if tt is not None:
            tt = tt[:, -len(ids):]
        mm_data = {}
        if images:
            mm_data["image"] = list(images)
        if kwargs.get("videos"):
            frames = [v.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy() for v in kwargs["videos"]]
            # vLLM takes each video as (frames, metadata) where the model needs the timing (Qwen2.5-VL,
            # Qwen3-VL): the frames are sampled already, so vLLM must not sample again
            metadata = [{**m, "duration": m["total_num_frames"] / m["fps"], "do_sample_frames": False}
                        for m in kwargs.get("video_metadata") or []]
            mm_data["video"] = list(zip(frames, metadata)) if metadata else frames
        return PromptInputs(
            sample_id=sample.id, prompt_ids=ids, text=text, features=features,
            token_type_ids=tt[0].tolist() if tt is not None else [0] * len(ids), multi_modal_data=mm_data,
        )
