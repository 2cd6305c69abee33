"""Rollouts sample from softmax(z / T) of the student, whatever the checkpoint's generation_config.json says.

Real instruct checkpoints ship sampling defaults (Qwen2.5 instruct: repetition_penalty 1.05, top_k 20, top_p
0.8; Qwen2-VL: top_k 1, top_p 0.001); ``generate`` applies every field a call does not override. The expected
values come from a separately loaded model's plain transformers forward, never from the rollout's code path.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from uniopd_mm.config import ModelConfig
from uniopd_mm.data import parse_record
from uniopd_mm.models import load_model, load_processor
from uniopd_mm.rollout.base import SamplingParams
from uniopd_mm.rollout.hf import HFRollout
from uniopd_mm.tiny_real import GENERATION_CONFIGS

N_DRAWS = 4096


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square test of ``counts`` against ``probs`` (cells with an expected count under 5 pooled):
    the p-value, from the regularised upper incomplete gamma function (the chi-square survival function)."""
    n = counts.sum()
    expected = probs.double() * n
    big = expected >= 5
    stat = (((counts[big] - expected[big]) ** 2) / expected[big]).sum()
    if (~big).any():
        rest = expected[~big].sum()
        stat = stat + (counts[~big].sum() - rest) ** 2 / rest
    df = int(big.sum()) + int((~big).any()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2.0))


@pytest.fixture(scope="module")
def instruct_copy(tiny_dir, tmp_path_factory):
    """The tiny text student with peaked logits (its output head x 4, as a trained model's are) and Qwen2.5-7B-Instruct's
    generation_config.json sampling fields (its own token ids kept); and the same weights with no generation config."""
    out = tmp_path_factory.mktemp("instruct_copy")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2-student")
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    bare, carrying = out / "bare", out / "carrying"
    model.save_pretrained(bare)
    shutil.copytree(tiny_dir / "qwen2-student", carrying, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bare / name, carrying / name)
    fields = {k: v for k, v in GENERATION_CONFIGS["Qwen2.5-7B-Instruct"].items() if "token_id" not in k}
    gen = json.loads((tiny_dir / "qwen2-student" / "generation_config.json").read_text())
    (carrying / "generation_config.json").write_text(json.dumps({**gen, **fields, "min_p": 0.05}))
    (bare / "generation_config.json").unlink()
    return bare, carrying


def wide_prompt(proc):
    """A prompt holding every other regular token, so the repetition penalty (on tokens already in the sequence)
    would touch about a third of the probability mass."""
    tok = proc.tokenizer
    text = tok.decode([i for i in range(0, len(tok), 2) if i not in tok.all_special_ids])
    return proc.encode_prompt(parse_record({"id": "w", "domain": "x", "answer": "1",
                                            "messages": [{"role": "user", "content": text}]}))


@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_first_tokens_follow_softmax_z_over_t(instruct_copy, temperature):
    bare, carrying = instruct_copy
    cfg = ModelConfig(path=str(carrying), family="text")
    proc = load_processor(cfg)
    prompt = wide_prompt(proc)
    # expected: the plain forward of a separately loaded copy that has no generation config at all
    ref = AutoModelForCausalLM.from_pretrained(bare)
    with torch.no_grad():
        z = ref(input_ids=torch.tensor([prompt.prompt_ids])).logits[0, -1].double()
    z[proc.suppressed_token_ids] = float("-inf")
    probs = (z / temperature).softmax(-1)
    torch.manual_seed(0)
    rollout = HFRollout(load_model(cfg), proc, batch_size=1024)
    out = rollout.generate([prompt], SamplingParams(n=N_DRAWS, temperature=temperature, max_new_tokens=1))
    first = torch.tensor([r[0] for r in out.responses])
    counts = torch.bincount(first, minlength=len(probs)).double()
    p = chi_square_p(counts, probs)
    in_prompt = torch.zeros(len(probs), dtype=torch.bool)
    in_prompt[prompt.prompt_ids] = True
    mass = float(probs[in_prompt].sum())
    z_prompt = (float(counts[in_prompt].sum()) - N_DRAWS * mass) / (N_DRAWS * mass * (1 - mass)) ** 0.5
    print(f"T={temperature}: chi-square p={p:.3f}, prompt-token mass {mass:.3f}, z={z_prompt:+.2f}")
    assert p > 1e-3 and abs(z_prompt) < 4
    # the rollout's own log-probs are log softmax(z / T) of the sampled tokens
    logp = (z / temperature).log_softmax(-1)
    got = torch.tensor([lp[0] for lp in out.logprobs], dtype=torch.float64)
    assert torch.allclose(got, logp[first], atol=1e-4)


def test_generate_builds_no_processor_from_the_checkpoint(instruct_copy, real_dir, monkeypatch):
    """What ``generate`` applies, read off its own list of logits processors: the config's temperature / top-p /
    top-k and the rollout's recorder, nothing from generation_config.json (the old code's list held
    RepetitionPenaltyLogitsProcessor and MinPLogitsWarper)."""
    from transformers.generation.utils import GenerationMixin

    built = []
    original = GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        built.append([type(p).__name__ for p in out])
        return out

    monkeypatch.setattr(GenerationMixin, "_get_logits_processor", spy)
    for path, family in ((instruct_copy[1], "text"), (real_dir / "qwen2_5-real", "text"),
                         (real_dir / "qwen2_vl-real", "qwen2_vl")):
        cfg = ModelConfig(path=str(path), family=family)
        proc = load_processor(cfg)
        prompt = proc.encode_prompt(parse_record({"id": "q", "domain": "x", "answer": "1",
                                                  "messages": [{"role": "user", "content": "red red red"}]}))
        rollout = HFRollout(load_model(cfg), proc)
        built.clear()
        rollout.generate([prompt], SamplingParams(n=2, temperature=0.9, top_p=1.0, max_new_tokens=3))
        assert built == [["SampledTokenLogprobs", "TemperatureLogitsWarper"]], (path, built)
        built.clear()
        rollout.generate([prompt], SamplingParams(n=1, greedy=True, max_new_tokens=3, logprobs=False))
        assert built == [["SampledTokenLogprobs"]], (path, built)


def test_greedy_evaluation_is_the_argmax_of_a_plain_forward(real_dir):
    """Greedy decoding of a real-vocabulary model that carries Qwen2.5-Instruct's generation_config.json equals a
    loop of argmax over a separately loaded model's plain forwards; the response stops at the checkpoint's EOS ids."""
    cfg = ModelConfig(path=str(real_dir / "qwen2_5-real"), family="text")
    proc = load_processor(cfg)
    assert proc.eos_token_ids == [151643, 151645]  # <|endoftext|> and <|im_end|>, as the checkpoint's config says
    prompt = proc.encode_prompt(parse_record({"id": "q", "domain": "x", "answer": "1",
                                              "messages": [{"role": "user", "content": "count the red shapes"}]}))
    out = HFRollout(load_model(cfg), proc).generate([prompt], SamplingParams(n=1, greedy=True, max_new_tokens=24))
    ref = AutoModelForCausalLM.from_pretrained(real_dir / "qwen2_5-real")
    ids = list(prompt.prompt_ids)
    expected = []
    with torch.no_grad():
        for _ in range(24):
            z = ref(input_ids=torch.tensor([ids])).logits[0, -1]
            z[proc.suppressed_token_ids] = float("-inf")
            nxt = int(z.argmax())
            expected.append(nxt)
            ids.append(nxt)
            if nxt in (151643, 151645):
                break
    assert out.responses[0] == expected
