"""The static-cache decoder against Hugging Face generate: the same greedy tokens and logits, the same
sampling filters (checked by hand), EOS handling, and the compiled step agreeing with the eager one."""

from __future__ import annotations

import pytest
import torch

from uniopd_mm.rollout.base import SamplingParams
from uniopd_mm.rollout.hf import HFRollout, filter_logits, sample_tokens


@pytest.fixture(scope="module")
def text_model(tiny_dir, synth_samples):
    from transformers import AutoModelForCausalLM

    from processors import make_processor

    path = str(tiny_dir / "qwen3-student")
    proc = make_processor("text", path)
    samples = [s for s in synth_samples if s.modality == "text"][:3] + [s for s in synth_samples if s.modality == "image"][:2]
    prompts = [proc.encode_prompt(s) for s in samples]  # different widths: left padding is exercised
    return AutoModelForCausalLM.from_pretrained(path).eval(), proc, prompts


def test_filter_logits_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.10]]))
    assert torch.isinf(filter_logits(logits, suppressed_ids=[1])[0, 1])
    assert filter_logits(logits, temperature=2.0)[0, 0].item() == pytest.approx(torch.log(torch.tensor(0.5)).item() / 2)
    kept = torch.isfinite(filter_logits(logits, top_k=2))[0].tolist()
    assert kept == [True, True, False, False]
    # top_p 0.7: the smallest set reaching 0.7 is {0.5, 0.25}; 0.8: {0.5, 0.25, 0.15}
    assert torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.8))[0].tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.01))[0].tolist() == [True, False, False, False]


def test_inverse_cdf_draw_samples_the_categorical():
    torch.manual_seed(0)
    # zero-probability tokens first, in the middle and last: never drawn (a filtered or suppressed id)
    p = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    draws = sample_tokens(torch.log(p).expand(40000, 6).clone())
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert torch.allclose(freq, p, atol=0.01) and freq[0] == freq[2] == freq[5] == 0
    # rows are independent and each follows its own distribution
    two = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9]])).repeat(20000, 1)
    draws = sample_tokens(two).view(20000, 2)
    assert draws[:, 0].float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert draws[:, 1].float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_inverse_cdf_draw_falls_back_to_the_argmax_past_the_float_total(monkeypatch):
    # u * total past the last cumulative sum (float rounding): the row takes its most likely token
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full((a[0], a[1]), 1.0 + 1e-6))
    logits = torch.log(torch.tensor([[0.2, 0.7, 0.1, 0.0]]))
    assert sample_tokens(logits).tolist() == [1]


@pytest.mark.parametrize("compiled", [False, True])
def test_static_decoder_matches_generate(text_model, compiled):
    model, proc, prompts = text_model
    params = SamplingParams(n=2, max_new_tokens=12, greedy=True)
    ref = HFRollout(model, proc).generate(prompts, params)
    ours = HFRollout(model, proc, decoder="static", compile_decoder=compiled).generate(prompts, params)
    assert ours.responses == ref.responses and ours.finished == ref.finished
    for a, b in zip(ours.logprobs, ref.logprobs):
        assert a == pytest.approx(b, abs=1e-4)


def test_static_decoder_sampling_and_eos(text_model):
    model, proc, prompts = text_model
    eos = proc.eos_token_ids[0]
    torch.manual_seed(1)
    out = HFRollout(model, proc, decoder="static").generate(prompts, SamplingParams(n=3, max_new_tokens=40))
    assert len(out.responses) == 3 * len(prompts) and out.prompt_index == [i for i in range(len(prompts)) for _ in range(3)]
    for resp, lps, fin in zip(out.responses, out.logprobs, out.finished):
        assert len(resp) == len(lps) and all(lp <= 0 for lp in lps)
        assert (resp[-1] in proc.eos_token_ids) == fin and not any(t in proc.eos_token_ids for t in resp[:-1])
        assert not set(resp) & set(proc.suppressed_token_ids)
    assert len({tuple(r) for r in out.responses}) > len(prompts)  # samples differ within a group
    assert eos in proc.eos_token_ids


def test_static_decoder_falls_back_to_generate_for_vl_models(tiny_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir / "qwen2_vl-student")
    with pytest.warns(UserWarning, match="text models"):
        ro = HFRollout(model, None, decoder="static")
    assert ro.decoder == "generate"


def test_a_training_step_with_the_static_decoder(tiny_dir, synth_dir, tmp_path):
    from conftest import tiny_config

    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.trainer import Trainer

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "static", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=["train.steps=2", "rollout.decoder=static", "rollout.reuse_logprobs=false"])
    Trainer(cfg).train()
    rows = read_metrics(tmp_path / "static" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/grad_norm"] > 0 for r in rows)
    # the decoder's own log-probs agree with the training engine's recomputation
    assert all(r["rollout/logprob_mismatch"] < 1e-4 for r in rows)


def test_rollout_logprobs_under_truncation_are_the_whole_distributions(text_model):
    """RECIPE 7: with top-k / top-p sampling on, the rollout's log-probs are still log softmax(z / T) over the whole
    vocabulary less the suppressed ids (what the trainer recomputes), not the truncated, renormalised ones."""
    from uniopd_mm.models import response_logprobs

    model, proc, prompts = text_model
    temp = 0.7
    torch.manual_seed(0)
    ro = HFRollout(model, proc).generate(prompts, SamplingParams(n=2, temperature=temp, top_p=0.5, top_k=5,
                                                                 max_new_tokens=6))
    ps = [prompts[i] for i in ro.prompt_index]
    batch = proc.training_batch(ps, ro.responses)
    with torch.no_grad():
        trainer = response_logprobs(model, batch, proc.suppressed_token_ids, temp)["logprobs"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    width = batch["responses"].shape[1]
    resp_logits = logits[:, -width - 1:-1]  # the logits that predict each response token
    resp_logits[..., proc.suppressed_token_ids] = float("-inf")
    by_hand = torch.log_softmax(resp_logits / temp, -1).gather(-1, batch["responses"][..., None])[..., 0]
    for i, lp in enumerate(ro.logprobs):
        n = len(lp)
        assert torch.allclose(torch.tensor(lp), by_hand[i, :n], atol=1e-4)
        assert torch.allclose(torch.tensor(lp), trainer[i, :n], atol=1e-4)
    # and the two definitions differ here: the truncated, renormalised distribution gives other numbers
    kept = filter_logits(resp_logits.reshape(-1, resp_logits.shape[-1]), temp, 5, 0.5).reshape(resp_logits.shape)
    truncated = torch.log_softmax(kept, -1).gather(-1, batch["responses"][..., None])[..., 0]
    gaps = [abs(x - truncated[i, t].item()) for i, lp in enumerate(ro.logprobs) for t, x in enumerate(lp)]
    assert max(gaps) > 1e-2
