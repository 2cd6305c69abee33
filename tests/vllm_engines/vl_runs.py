"""The vLLM side of the VL tests (tests/vllm_engines/test_vllm_vl.py), each run in a fresh interpreter:
one vLLM engine per process. ``python vl_runs.py NAME JSON_ARGS`` prints one JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
ENGINE = dict(enforce_eager=True, max_model_len=2048, dtype="float32")
PIXELS = dict(image_min_pixels=784, image_max_pixels=50176, video_min_pixels=784, video_max_pixels=12544, fps=2.0)


def perturb(model, scale: float, seed: int):
    """Adds seeded Gaussian noise of std ``scale`` to every weight of ``model``, in place; returns it. (Another
    model than the original: a teacher with non-zero advantages, or new weights for a sync.)"""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def processor(family, path):
    from processors import make_processor
    from uniopd_mm.config import ProcessorConfig

    return make_processor(family, str(path), options=ProcessorConfig(**PIXELS))


def samples(data, modality, n):
    from uniopd_mm.data import load_jsonl

    out = [s for s in load_jsonl(Path(data) / "train.jsonl", strict=True) if s.modality == modality][:n]
    assert len(out) == n, (modality, n)
    return out


def rows(data):
    """Two image, two video and one text prompt: the greedy rows, also one mixed batch."""
    return samples(data, "image", 2) + samples(data, "video", 2) + samples(data, "text", 1)


def rollout_parity(family, model, data):
    """vLLM against HF generate: greedy tokens and log-probs per row; n samples of a mixed batch."""
    import torch
    from transformers import AutoModelForImageTextToText

    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout
    from uniopd_mm.rollout.vllm import VLLMRollout

    proc = processor(family, model)
    picked = rows(data)
    prompts = [proc.encode_prompt(s) for s in picked]
    engine = VLLMRollout(str(model), proc, **ENGINE)
    greedy = SamplingParams(n=1, max_new_tokens=8, greedy=True)
    v = engine.generate(prompts, greedy)
    sampled = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6))
    torch.manual_seed(0)
    h = HFRollout(AutoModelForImageTextToText.from_pretrained(model).eval(), proc).generate(prompts, greedy)
    # the prompt as vLLM expanded it (placeholders, frames, timestamps) against ours
    from vllm import SamplingParams as VSP

    from uniopd_mm.rollout.vllm import vllm_request

    outs = engine.llm.generate([vllm_request(p) for p in prompts], VSP(max_tokens=1), use_tqdm=False)
    same_prompt = [list(o.prompt_token_ids) == list(p.prompt_ids) for o, p in zip(outs, prompts)]
    return {"modalities": [s.modality for s in picked], "same_prompt": same_prompt, "vllm": v.responses, "vllm_lp": v.logprobs,
            "hf": h.responses, "hf_lp": h.logprobs, "sampled_index": sampled.prompt_index,
            "sampled_lens": [len(r) for r in sampled.responses], "sampled_lp": sampled.logprobs}


def weight_sync(family, model, data, out):
    """Greedy outputs before and after syncing perturbed weights; the perturbed model is saved to ``out``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.vllm import VLLMRollout

    proc = processor(family, model)
    prompts = [proc.encode_prompt(s) for s in rows(data)]
    engine = VLLMRollout(str(model), proc, **ENGINE)
    greedy = SamplingParams(n=1, max_new_tokens=8, greedy=True)
    before = engine.generate(prompts, greedy)
    hf = perturb(AutoModelForImageTextToText.from_pretrained(model), 0.5, seed=0)
    engine.sync_weights(hf.state_dict().items())
    after = engine.generate(prompts, greedy)
    hf.save_pretrained(out)
    AutoProcessor.from_pretrained(model).save_pretrained(out)
    return {"before": before.responses, "after": after.responses, "after_lp": after.logprobs}


def greedy(family, model, data):
    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.vllm import VLLMRollout

    proc = processor(family, model)
    out = VLLMRollout(str(model), proc, **ENGINE).generate([proc.encode_prompt(s) for s in rows(data)],
                                                           SamplingParams(n=1, max_new_tokens=8, greedy=True))
    return {"responses": out.responses, "logprobs": out.logprobs}


def teacher_scores(family, model, data, responses):
    from uniopd_mm.teacher.vllm import VLLMTeacher

    proc = processor(family, model)
    sc = VLLMTeacher(str(model), proc, engine_kwargs=ENGINE).score(samples(data, "image", 2), responses)
    return {"logprobs": sc.logprobs.tolist(), "mask": sc.token_mask.tolist(), "failed": sc.failed.tolist(),
            "reasons": sc.reasons}


def train(config):
    from uniopd_mm.config import load_config
    from uniopd_mm.trainer import Trainer

    Trainer(load_config(None, [], base=config)).train()
    metrics = Path(config["output_dir"]) / "metrics.jsonl"
    return {"rows": [json.loads(line) for line in metrics.read_text().splitlines()]}


if __name__ == "__main__":
    result = globals()[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result))
