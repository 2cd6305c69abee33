"""Training engines: one step gives the same loss and grad norm on plain torch and DeepSpeed."""

from __future__ import annotations

import pytest
import torch

from processors import make_processor
from uniopd_mm.algo.loss import aggregate
from uniopd_mm.config import ModelConfig, TrainConfig
from uniopd_mm.models import load_model, response_logprobs
from uniopd_mm.training import make_training_engine


@pytest.fixture(scope="module")
def fixed_batch(tiny_dir, synth_samples, tiny_processor_options):
    proc = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"), options=tiny_processor_options)
    samples = [s for s in synth_samples if s.modality == "image"][:3] + [s for s in synth_samples if s.modality == "video"][:1]
    prompts = [proc.encode_prompt(s) for s in samples]
    responses = [proc.tokenizer(s.meta["solution"], add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1]
                 for s in samples]
    return proc, prompts, responses


def _one_step(engine_name, tiny_dir, fixed_batch, rollout_first=False, **train):
    proc, prompts, responses = fixed_batch
    cfg = TrainConfig(engine=engine_name, lr=1e-2, warmup_steps=0, grad_clip=1.0, **train)
    mcfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl")
    torch.manual_seed(0)
    engine = make_training_engine(engine_name, model_loader=lambda: load_model(mcfg), train_cfg=cfg)
    n_tok = float(sum(len(r) for r in responses))

    def nll(model, rows):
        batch = proc.training_batch([prompts[r] for r in rows], [responses[r] for r in rows])
        lp = response_logprobs(model, batch, proc.suppressed_token_ids)["logprobs"]
        return aggregate(-lp, batch["response_mask"], "token_mean", n_tok), {}

    if rollout_first:  # a rollout, then the step: ZeRO-3's hooks must be back in place for the update
        from uniopd_mm.rollout import SamplingParams
        from uniopd_mm.rollout.hf import HFRollout

        torch.manual_seed(5)
        with engine.rollout_context():
            out = HFRollout(engine.module, proc).generate(prompts[:2], SamplingParams(n=2, max_new_tokens=8))
        train["rollout"] = out.responses
    metrics = engine.train_step([[0, 1], [2, 3]], nll)  # two micro-batches, one optimiser step
    with engine.rollout_context():
        params = {k: v.detach().clone() for k, v in engine.module.named_parameters()}
    return (metrics, params, train["rollout"]) if rollout_first else (metrics, params)


def test_a_zero3_rollout_is_plain_generate_and_leaves_the_update_alone(tiny_dir, fixed_batch):
    """Under ZeRO-3 the rollout runs on weights gathered once, without ZeRO-3's hooks: its tokens are what plain
    ``generate`` of a separately loaded model draws with the same seed, and the update after it equals the update
    of an engine that ran no rollout (the hooks are back)."""
    proc, prompts, _ = fixed_batch
    plain, plain_params = _one_step("deepspeed", tiny_dir, fixed_batch, zero_stage=3)
    after, after_params, tokens = _one_step("deepspeed", tiny_dir, fixed_batch, rollout_first=True, zero_stage=3)
    assert after["train/loss"] == plain["train/loss"] and after["train/grad_norm"] == plain["train/grad_norm"]
    assert all(torch.equal(after_params[k], v) for k, v in plain_params.items())
    model = load_model(ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl"))
    batch = proc.rollout_batch([p for p in prompts[:2] for _ in range(2)])
    torch.manual_seed(5)
    with torch.no_grad():
        seqs = model.eval().generate(**batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=8,
                                     suppress_tokens=proc.suppressed_token_ids, eos_token_id=proc.eos_token_ids,
                                     pad_token_id=proc.pad_token_id)[:, batch["input_ids"].shape[1]:].tolist()
    eos = set(proc.eos_token_ids)
    expected = [ids[: next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))] for ids in seqs]
    assert tokens == expected


def test_torch_and_deepspeed_agree_on_one_step(tiny_dir, fixed_batch):
    ref, ref_params = _one_step("torch", tiny_dir, fixed_batch)
    assert ref["train/skipped"] == 0.0 and ref["train/grad_norm"] > 0
    for stage in (0, 3):
        ds, ds_params = _one_step("deepspeed", tiny_dir, fixed_batch, zero_stage=stage)
        assert ds["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-5), stage
        assert ds["train/grad_norm"] == pytest.approx(ref["train/grad_norm"], rel=1e-4), stage
        # lr 1e-2: the first Adam step moves each weight by about +-1e-2 whatever its gradient's size, so
        # a weight whose gradient is ~0 may step either way when ZeRO-3 sums in another order: compare
        # stage 3 on the bulk of the weights (stage 0 must match everywhere)
        for k, v in ref_params.items():
            if stage == 0:
                assert torch.allclose(ds_params[k], v, atol=1e-6), (stage, k)
            else:
                close = ((ds_params[k] - v).abs() <= 2e-5).float().mean().item()
                assert close >= 0.999, (stage, k, close)


def test_nonfinite_loss_skips_the_step(tiny_dir, fixed_batch):
    cfg = TrainConfig(engine="torch", lr=1e-2, warmup_steps=0)
    mcfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl")
    engine = make_training_engine("torch", model_loader=lambda: load_model(mcfg), train_cfg=cfg)
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    metrics = engine.train_step([[0]], lambda model, rows: (torch.tensor(float("nan"), requires_grad=True), {}))
    assert metrics["train/skipped"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in engine.module.state_dict().items())


@pytest.mark.parametrize("schedule, expected", [
    # warm-up 2 steps: 1/2, 2/2; then over the remaining 8 steps (progress 0, 1/4, 1/2, 1)
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    # cosine to 0.1: 0.1 + 0.9 * (1 + cos(pi * p)) / 2 -> 1.0, 0.1 + 0.9 * 0.8536 = 0.8682, 0.55, 0.1
    ("cosine", [0.5, 1.0, 1.0, 0.8682, 0.55, 0.1]),
    # linear to 0.1: 0.1 + 0.9 * (1 - p) -> 1.0, 0.775, 0.55, 0.1
    ("linear", [0.5, 1.0, 1.0, 0.775, 0.55, 0.1]),
])
def test_lr_schedules_by_hand(schedule, expected):
    from uniopd_mm.training.base import lr_factor

    steps = [0, 1, 2, 4, 6, 10]
    got = [lr_factor(s, warmup_steps=2, total_steps=10, schedule=schedule, min_lr_ratio=0.1) for s in steps]
    assert got == pytest.approx(expected, abs=1e-4)
    # past the end the decay holds at the floor
    assert lr_factor(50, 2, 10, schedule, 0.1) == pytest.approx(expected[-1])


@pytest.mark.parametrize("engine_name, stage", [("torch", 0), ("deepspeed", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_nonfinite_gradient_with_a_finite_loss_leaves_the_weights(tiny_dir, fixed_batch, engine_name, stage):
    """A finite loss whose gradient is NaN (sqrt(|u|) at u = 0: sign(0) / 0): the step is skipped and no weight
    moves, on every engine and ZeRO stage (fp32, where no loss scaler would catch it)."""
    proc, prompts, responses = fixed_batch
    cfg = TrainConfig(engine=engine_name, lr=1e-2, warmup_steps=0, grad_clip=1.0, zero_stage=stage)
    mcfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl")
    engine = make_training_engine(engine_name, model_loader=lambda: load_model(mcfg), train_cfg=cfg)
    with engine.rollout_context():
        before = {k: v.detach().clone() for k, v in engine.module.named_parameters()}

    def nan_gradient(model, rows):
        batch = proc.training_batch([prompts[r] for r in rows], [responses[r] for r in rows])
        lp = response_logprobs(model, batch, proc.suppressed_token_ids)["logprobs"]
        u = lp.sum() - lp.sum().detach()
        loss = -lp.mean() + torch.sqrt(u.abs())
        assert torch.isfinite(loss)
        return loss, {}

    metrics = engine.train_step([[0, 1]], nan_gradient)
    assert metrics["train/skipped"] == 1.0
    with engine.rollout_context():
        after = {k: v.detach().clone() for k, v in engine.module.named_parameters()}
    assert all(torch.equal(before[k], after[k]) for k in before), engine_name
