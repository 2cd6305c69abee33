"""CUDA against the CPU on the same inputs (fp32): a training step of the plain torch engine, the HF
teacher's scores, and the DeepSpeed engine's collectives under NCCL. Skipped, saying so, without a
CUDA device; ``scripts/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from processors import make_processor
from uniopd_mm.algo.loss import aggregate
from uniopd_mm.config import ModelConfig, TrainConfig
from uniopd_mm.models import load_model, response_logprobs
from uniopd_mm.training import make_training_engine

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def full_fp32():
    """CUDA in full fp32: cuDNN's convolutions (the vision patch embedding) default to TF32, whose
    10-bit mantissa moves teacher log-probs by ~2e-4 and a step's vision weights past 1e-5 (seen on an
    H200); these tests compare the code paths, not TF32's rounding."""
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        matmul = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul


@pytest.fixture(scope="module")
def vl_rows(tiny_dir, synth_samples, tiny_processor_options):
    proc = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"), options=tiny_processor_options)
    picked = [next(s for s in synth_samples if s.modality == m) for m in ("text", "image", "video")]
    prompts = [proc.encode_prompt(s) for s in picked]
    responses = [proc.tokenizer(s.meta["solution"], add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1]
                 for s in picked]
    return proc, picked, prompts, responses


def test_torch_engine_step_on_cuda_equals_the_cpu(tiny_dir, vl_rows, monkeypatch):
    proc, _, prompts, responses = vl_rows
    n_tok = float(sum(len(r) for r in responses))
    results = {}
    for device in ("cpu", "cuda"):
        if device == "cpu":  # the engine takes CUDA whenever it is there
            monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        else:
            monkeypatch.undo()
        torch.manual_seed(0)
        engine = make_training_engine("torch", model_loader=lambda: load_model(
            ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl")),
            train_cfg=TrainConfig(engine="torch", lr=1e-3, warmup_steps=0, grad_clip=1.0))
        assert next(engine.module.parameters()).device.type == device

        def nll(model, rows):
            batch = proc.training_batch([prompts[r] for r in rows], [responses[r] for r in rows])
            lp = response_logprobs(model, batch, proc.suppressed_token_ids)["logprobs"]
            return aggregate(-lp, batch["response_mask"].to(lp.device), "token_mean", n_tok), {}

        metrics = engine.train_step([[0, 1], [2]], nll)
        results[device] = (metrics, {k: v.detach().cpu() for k, v in engine.module.named_parameters()})
    (cpu, w_cpu), (gpu, w_gpu) = results["cpu"], results["cuda"]
    assert gpu["train/loss"] == pytest.approx(cpu["train/loss"], rel=1e-4)
    assert gpu["train/grad_norm"] == pytest.approx(cpu["train/grad_norm"], rel=1e-3)
    for k, v in w_cpu.items():
        assert ((w_gpu[k] - v).abs() <= 1e-5).float().mean().item() >= 0.999, k


def test_hf_teacher_scores_on_cuda_equal_the_cpu(tiny_dir, vl_rows):
    from uniopd_mm.teacher import make_teacher

    proc, samples, _, responses = vl_rows
    scores = {}
    for device in ("cpu", "cuda"):
        model = load_model(ModelConfig(path=str(tiny_dir / "qwen2_vl-teacher"), family="qwen2_vl"), frozen=True)
        teacher = make_teacher("hf", model=model, processor=proc, device=device)
        scores[device] = teacher.score(samples, responses).logprobs
    assert torch.isfinite(scores["cuda"]).all()
    assert torch.allclose(scores["cuda"], scores["cpu"], atol=1e-4)


def test_deepspeed_collectives_under_nccl_take_cpu_tensors():
    """One process under NCCL: the trainer hands the engine CPU tensors and gets CPU tensors back."""
    import torch.distributed as dist

    from uniopd_mm.training.deepspeed_engine import comm_device, init_distributed

    init_distributed(60)
    assert dist.get_backend() == "nccl"
    engine = type("E", (), {})()  # the collectives alone, without a model
    from uniopd_mm.training.deepspeed_engine import DeepSpeedEngine

    engine.comm_device, engine.world_size = comm_device(dist.get_backend()), 1
    assert engine.comm_device.type == "cuda"
    out = DeepSpeedEngine.all_reduce(engine, torch.tensor([1.0, 2.0]), "max")
    assert out.device.type == "cpu" and out.tolist() == [1.0, 2.0]
    parts = DeepSpeedEngine.all_gather(engine, torch.arange(3))
    assert [p.device.type for p in parts] == ["cpu"] and parts[0].tolist() == [0, 1, 2]
