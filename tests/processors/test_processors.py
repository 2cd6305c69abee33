"""Processors: our batches equal the official Qwen-VL recipe, and the tiny models run on them."""

from __future__ import annotations

import pytest
import torch

from processors import make_processor, model_inputs
from uniopd_mm.data import MissingTextView, Sample

VL = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def _pick(samples, modality, n=2):
    out = [s for s in samples if s.modality == modality][:n]
    assert len(out) == n
    return out


def _official(family, path, samples, options, response_texts):
    """The model-card recipe: qwen-vl-utils, then the processor on the whole batch."""
    from qwen_vl_utils import process_vision_info
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(path)
    convs, texts = [], []
    for s, resp in zip(samples, response_texts):
        conv = []
        for m in s.messages:
            parts = []
            for p in m["content"]:
                if p["type"] == "image":
                    p = {**p, "min_pixels": options.image_min_pixels, "max_pixels": options.image_max_pixels}
                elif p["type"] == "video":
                    p = {**p, "min_pixels": options.video_min_pixels, "max_pixels": options.video_max_pixels,
                         "fps": options.fps}
                parts.append(p)
            conv.append({"role": m["role"], "content": parts})
        convs.append(conv)
        texts.append(proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) + resp)
    patch = 16 if family == "qwen3_vl" else 14
    # the Qwen2.5-VL and Qwen3-VL cards pass the sampled frames' metadata (their processors time the frames with it)
    timed = family in ("qwen2_5_vl", "qwen3_vl")
    images, videos, vkw = process_vision_info(convs, return_video_kwargs=True, image_patch_size=patch,
                                              return_video_metadata=timed)
    kwargs = {}
    if videos and timed:
        videos, metas = map(list, zip(*videos))
        kwargs = {"video_metadata": metas, **vkw}
    elif videos:
        kwargs = {"fps": vkw["fps"][0], "do_sample_frames": False}
    proc.tokenizer.padding_side = "right"
    return proc(text=texts, images=images, videos=videos, padding=True, do_resize=False, return_tensors="pt", **kwargs)


@pytest.mark.parametrize("family", VL)
@pytest.mark.parametrize("modality", ["image", "video"])
def test_training_batch_equals_official_processor(tiny_dir, synth_samples, tiny_processor_options, family, modality):
    path = tiny_dir / f"{family}-student"
    samples = _pick(synth_samples, modality)
    proc = make_processor(family, str(path), options=tiny_processor_options)
    response_texts = ["red: 3, blue: 2, so 5<|im_end|>", "so left<|im_end|>"]
    responses = [proc.tokenizer(t, add_special_tokens=False)["input_ids"] for t in response_texts]
    ours = proc.training_batch([proc.encode_prompt(s) for s in samples], responses)
    ref = _official(family, path, samples, tiny_processor_options, response_texts)
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        assert (key in ours) == (key in ref), key
        if key in ref:
            assert torch.equal(ours[key], ref[key]), key
    # token rows equal once padding is removed (our layout pads prompts left, responses right)
    for i, resp in enumerate(responses):
        keep, keep_ref = ours["attention_mask"][i].bool(), ref["attention_mask"][i].bool()
        for key in ("input_ids", "mm_token_type_ids"):
            assert ours[key][i][keep].tolist() == ref[key][i][keep_ref].tolist(), key
        # every response starts at the same column and the mask marks exactly its tokens
        width_p = ours["input_ids"].shape[1] - ours["responses"].shape[1]
        assert ours["input_ids"][i, width_p:width_p + len(resp)].tolist() == resp
        assert ours["responses"][i][ours["response_mask"][i].bool()].tolist() == resp
    if modality == "video" and family == "qwen2_5_vl":
        assert "second_per_grid_ts" in ours


@pytest.mark.parametrize("fps", [0.5, 2.0, 10.0])
def test_qwen2_5_vl_seconds_per_temporal_patch_from_the_definition(tiny_dir, tiny_processor_options, tmp_path, fps):
    """second_per_grid_ts = temporal_patch_size / sampled frames per second (Qwen2.5-VL's absolute-time rope).

    A 4 s video, 40 frames at 10 fps. qwen-vl-utils (the model card's sampler) samples round(4 s * fps) frames, at
    least 4 and a multiple of the temporal patch (2): fps 0.5 -> 4 frames over 4 s = 1 fps -> 2 / 1 = 2.0 s per patch;
    fps 2 -> 8 frames, 2 fps -> 1.0; fps 10 -> all 40 frames, 10 fps -> 0.2. Before the frames' metadata reached
    the processor, transformers assumed 24 fps and every case gave 2 / 24 = 0.0833."""
    from dataclasses import replace

    from PIL import Image

    from uniopd_mm.data import parse_record
    from uniopd_mm.synthetic import write_video

    frames = [Image.new("RGB", (56, 56), (6 * t, 100, 255 - 6 * t)) for t in range(40)]
    write_video(frames, tmp_path / "clip.mp4", fps=10)
    sample = parse_record({"id": "clip", "videos": ["clip.mp4"], "prompt": "What moves?", "answer": "x"},
                          tmp_path / "data.jsonl", 1)
    expected_frames, expected = {0.5: (4, 2.0), 2.0: (8, 1.0), 10.0: (40, 0.2)}[fps]
    proc = make_processor("qwen2_5_vl", str(tiny_dir / "qwen2_5_vl-student"),
                          options=replace(tiny_processor_options, fps=fps))
    p = proc.encode_prompt(sample)
    assert p.features["video_grid_thw"][0, 0].item() * 2 == expected_frames  # grid t = frames / temporal patch
    assert p.features["second_per_grid_ts"].tolist() == pytest.approx([expected])


@pytest.mark.parametrize("family", VL)
def test_forward_generate_backward(tiny_dir, synth_samples, tiny_processor_options, family):
    from transformers import AutoModelForImageTextToText

    path = tiny_dir / f"{family}-student"
    proc = make_processor(family, str(path), options=tiny_processor_options)
    samples = _pick(synth_samples, "image", 2) + _pick(synth_samples, "video", 1) + _pick(synth_samples, "text", 1)
    prompts = [proc.encode_prompt(s) for s in samples]
    model = AutoModelForImageTextToText.from_pretrained(path)
    gen = model.generate(**proc.rollout_batch(prompts), max_new_tokens=6, do_sample=True,
                         suppress_tokens=proc.suppressed_token_ids, pad_token_id=proc.pad_token_id)
    width = proc.rollout_batch(prompts)["input_ids"].shape[1]
    responses = [row[width:].tolist() for row in gen]
    assert all(len(r) == 6 for r in responses)
    assert not set(sum(responses, [])) & set(proc.suppressed_token_ids)
    batch = proc.training_batch(prompts, responses)
    mask, resp = batch["response_mask"], batch["responses"]
    logits = model(**model_inputs(batch), logits_to_keep=resp.shape[1] + 1).logits[:, :-1]
    full = model(**model_inputs(batch)).logits[:, -resp.shape[1] - 1:-1]
    assert torch.allclose(logits, full, atol=1e-5)  # the training layout's response columns
    logp = torch.log_softmax(logits.float(), -1).gather(-1, resp[..., None])[..., 0]
    loss = -(logp * mask).sum() / mask.sum()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0  # the vision tower learns too


def test_text_view_for_text_model_and_vl_model(tiny_dir, synth_samples):
    sample = _pick(synth_samples, "image", 1)[0]
    text_proc = make_processor("text", str(tiny_dir / "qwen3-student"))
    p = text_proc.encode_prompt(sample)
    assert sample.text_view in p.text and "<|image_pad|>" not in p.text and p.features == {}
    vl_as_text = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"), view="text")
    q = vl_as_text.encode_prompt(sample)
    assert sample.text_view in q.text and "pixel_values" not in q.features
    assert q.prompt_ids == p.prompt_ids  # same vocabulary, same template


def test_missing_text_view_is_a_named_error(tiny_dir, synth_samples):
    sample = _pick(synth_samples, "video", 1)[0]
    bare = Sample(**{**sample.__dict__, "text_view": None})
    proc = make_processor("text", str(tiny_dir / "qwen2-student"))
    with pytest.raises(MissingTextView, match=sample.id):
        proc.encode_prompt(bare)


def test_text_family_on_text_records(tiny_dir, synth_samples):
    sample = _pick(synth_samples, "text", 1)[0]
    proc = make_processor("text", str(tiny_dir / "qwen2-student"))
    p = proc.encode_prompt(sample)
    expected = proc.tokenizer.apply_chat_template(
        [{"role": "user", "content": sample.messages[0]["content"][0]["text"]}], tokenize=True,
        add_generation_prompt=True, return_dict=True)["input_ids"]
    assert p.prompt_ids == list(expected)
    batch = proc.training_batch([p, p], [[5, 6], [7]])
    assert batch["input_ids"].shape == (2, len(p.prompt_ids) + 2)
    assert batch["responses"].tolist() == [[5, 6], [7, proc.pad_token_id]]
    assert batch["response_mask"].sum().item() == 3 and "mm_token_type_ids" not in batch
    left = proc.rollout_batch([p, proc.encode_prompt(_pick(synth_samples, "text", 2)[1])])
    assert (left["attention_mask"][:, -1] == 1).all()  # left padding: the last column is real


def test_processors_that_render_alike(tiny_dir, tiny_processor_options, tmp_path):
    """Encoded prompts may be shared only between processors that render every sample alike: the tiny Qwen2-VL
    student and teacher (one tokenizer, one chat template) under the same options; not under another pixel
    budget, another chat template (the teacher that opens an empty think block), another family or a tokenizer
    with one more token."""
    from dataclasses import replace

    from transformers import AutoProcessor

    def proc(name, family="qwen2_vl", options=tiny_processor_options):
        return make_processor(family, str(tiny_dir / name if isinstance(name, str) else name), options=options)

    student = proc("qwen2_vl-student")
    assert student.renders_like(proc("qwen2_vl-teacher"))
    assert not student.renders_like(proc("qwen2_vl-teacher", options=replace(tiny_processor_options,
                                                                              image_max_pixels=112 * 112)))
    assert not student.renders_like(proc("qwen2_vl-teacher-think"))
    assert not student.renders_like(proc("qwen2_5_vl-teacher", family="qwen2_5_vl"))
    extra = AutoProcessor.from_pretrained(tiny_dir / "qwen2_vl-student")
    assert extra.tokenizer.add_tokens(["zebra"]) == 1
    extra.save_pretrained(tmp_path / "extra")
    assert not student.renders_like(proc(tmp_path / "extra"))


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown processor family"):
        make_processor("llava", "/nowhere")
