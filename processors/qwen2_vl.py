"""Qwen2-VL: the official ``AutoProcessor`` plus ``qwen_vl_utils.process_vision_info``.

The recipe is the one on the Qwen2-VL model card: qwen-vl-utils fetches, resizes and samples the
visuals (pixel budgets and frame rate from :class:`uniopd_mm.config.ProcessorConfig`), then the
processor renders the chat and expands the placeholder tokens. ``do_resize=False`` keeps the pixel
budget in one place (ours), as the Qwen3-VL card does.
"""

from __future__ import annotations

import os

from uniopd_mm.data import DataError, Sample, check_media

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
    # vLLM needs each video's metadata where the model uses the timing (Qwen2.5-VL, Qwen3-VL)
    video_metadata_for_vllm = False

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
                messages, return_video_kwargs=True, return_video_metadata=True,
                image_patch_size=self.image_patch_size,
            )
        except Exception as e:
            check_media(sample)  # raises MissingMedia / CorruptImage / UndecodableVideo for the file that failed
            raise sample.error(DataError, f"qwen-vl-utils could not read the visuals, though each file opens: "
                                          f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None

    def processor_kwargs(self, images, videos, video_kwargs) -> dict:
        """The HF processor's arguments: qwen-vl-utils' frames with each video's own metadata (sampled frame
        indices, fps), so videos of one prompt may come at different rates.

        NOTE: transformers 5.x ignores a plain ``fps`` keyword and assumes 24 fps (Qwen2.5-VL's
        ``second_per_grid_ts`` was 2/24 whatever the video); the metadata is how the timing gets in."""
        if not videos:
            return {"images": images, "videos": None, "do_resize": False}
        frames, metadata = zip(*videos)
        return {"images": images, "videos": list(frames), "video_metadata": list(metadata),
                "do_resize": False, **(video_kwargs or {}), **self.no_frame_cap()}

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
        try:  # NOTE: every processor failure leaves as a named data error (the callers catch DataError only)
            kwargs = self.processor_kwargs(images, videos, video_kwargs)
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
        if images and self.keep_media:
            mm_data["image"] = list(images)
        if kwargs.get("videos") and self.keep_media:
            frames = [v.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy() for v in kwargs["videos"]]
            # vLLM takes each video as (frames, metadata) where the model needs the timing (Qwen2.5-VL,
            # Qwen3-VL): the frames are sampled already, so vLLM must not sample again
            metadata = [{**m, "duration": m["total_num_frames"] / m["fps"], "do_sample_frames": False}
                        for m in kwargs["video_metadata"]]
            mm_data["video"] = list(zip(frames, metadata)) if self.video_metadata_for_vllm else frames
        return PromptInputs(
            sample_id=sample.id, prompt_ids=ids, text=text, features=features,
            token_type_ids=tt[0].tolist() if tt is not None else [0] * len(ids), multi_modal_data=mm_data,
        )
