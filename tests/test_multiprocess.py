"""One process against two: the same global batch gives the same update.

The tiny Qwen2-VL student takes one optimiser step on five rows (three text-only, one image, one
video). One process (the plain torch engine) sees all five; two DeepSpeed processes (gloo, ZeRO-2 and
ZeRO-3) split them so that rank 0 holds only the text rows (two micro-batches) and rank 1 only the
visual rows (one micro-batch, padded to two). The loss, the gradient norm and the updated weights
must agree. Under ZeRO-3 this is the mixed text / visual case: rank 0 runs the vision tower on a
dummy input (``training/visual_balance.py``) while rank 1 runs it on its images and video.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from processors import make_processor
from uniopd_mm.algo.loss import aggregate
from uniopd_mm.config import ModelConfig, TrainConfig
from uniopd_mm.data import load_jsonl
from uniopd_mm.models import load_model, response_logprobs
from uniopd_mm.training import make_training_engine

RANK_ROWS = {0: [0, 1, 2], 1: [3, 4]}  # text rows on rank 0, the image and the video on rank 1


def _rows(tiny, data, options):
    proc = make_processor("qwen2_vl", f"{tiny}/qwen2_vl-student", options=options)
    samples = load_jsonl(f"{data}/train.jsonl", strict=True)
    text = [s for s in samples if s.modality == "text"][:3]
    picked = text + [next(s for s in samples if s.modality == "image"), next(s for s in samples if s.modality == "video")]
    prompts = [proc.encode_prompt(s) for s in picked]
    responses = [proc.tokenizer(s.meta["solution"], add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1]
                 for s in picked]
    return proc, prompts, responses


def _step(engine_name, tiny, data, options, rows, micro_batches, **train):
    """One optimiser step of the token-mean NLL of ``rows``; (metrics, whole weights)."""
    proc, prompts, responses = _rows(tiny, data, options)
    n_all = float(sum(len(r) for r in responses))  # the global count, as the trainer's normaliser
    cfg = TrainConfig(engine=engine_name, lr=1e-3, warmup_steps=0, grad_clip=1.0, weight_decay=0.0,
                      vision_lr_scale=0.5, **train)
    torch.manual_seed(0)
    engine = make_training_engine(engine_name, model_loader=lambda: load_model(
        ModelConfig(path=f"{tiny}/qwen2_vl-student", family="qwen2_vl")), train_cfg=cfg)

    def nll(model, mb):
        real = [rows[i] for i in mb if i >= 0]
        take = real or [rows[0]]
        batch = proc.training_batch([prompts[r] for r in take], [responses[r] for r in take])
        lp = response_logprobs(model, batch, proc.suppressed_token_ids)["logprobs"]
        mask = batch["response_mask"].to(lp.device) * (1.0 if real else 0.0)
        return aggregate(-lp, mask, "token_mean", n_all / engine.world_size), {}

    metrics = engine.train_step(micro_batches, nll)
    with engine.rollout_context():
        params = {k: v.detach().float().cpu().clone() for k, v in engine.module.named_parameters()}
    balance = getattr(engine, "visual_balance", None)
    metrics["dummy_visual_calls"] = float(balance.dummy_calls) if balance is not None else 0.0
    return metrics, params


def _worker(rank, world, port, out, tiny, data, options, stage):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from uniopd_mm.training.base import even_micro_batches
    from uniopd_mm.training.deepspeed_engine import init_distributed, shutdown_distributed

    init_distributed(120)
    rows = RANK_ROWS[rank]

    class _Counts:  # the engine's all_reduce before the engine exists: plain gloo
        @staticmethod
        def all_reduce(t, op):
            import torch.distributed as dist

            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return t

    chunks = even_micro_batches(len(rows), 2, _Counts)  # rank 0: [[0, 1], [2]]; rank 1: [[0, 1], [-1]]
    metrics, params = _step("deepspeed", tiny, data, options, rows, chunks, zero_stage=stage)
    if rank == 0:
        torch.save({"metrics": metrics, "params": params, "chunks": chunks}, out)
    shutdown_distributed()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tiny_dir, synth_dir, tiny_processor_options):
    return _step("torch", tiny_dir, synth_dir, tiny_processor_options, [0, 1, 2, 3, 4], [[0, 1], [2, 3], [4]])


@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_update_like_one(tiny_dir, synth_dir, tiny_processor_options, one_process, tmp_path, stage):
    ref, ref_params = one_process
    assert ref["train/skipped"] == 0.0 and ref["train/grad_norm"] > 0
    out, port = tmp_path / "two.pt", _free_port()
    mp.spawn(_worker, args=(2, port, str(out), str(tiny_dir), str(synth_dir), tiny_processor_options, stage),
             nprocs=2, join=True)
    # DeepSpeed's CPU all-reduce buffers (~66 MB of RAM per rank in /dev/shm) are gone with their processes
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    two = torch.load(out, weights_only=False)
    got = two["metrics"]
    assert two["chunks"] == [[0, 1], [2]]
    # the logged loss is the global token-mean NLL whatever the process count (it was the sum over ranks)
    assert got["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-5)
    assert got["train/grad_norm"] == pytest.approx(ref["train/grad_norm"], rel=1e-4)
    if stage == 3:  # rank 0 had text only: its forwards ran the vision tower on dummies (2 per forward)
        assert got["dummy_visual_calls"] >= 4
    changed = 0
    for k, v in ref_params.items():
        # Adam's first step moves each weight by about lr whatever its gradient's size, so a weight whose
        # gradient is ~0 may step either way when the ranks sum in another order: compare the bulk
        close = ((two["params"][k] - v).abs() <= 2e-6).float().mean().item()
        assert close >= 0.999, (stage, k, close)
        changed += int(k.startswith("model.visual."))
    assert changed > 0  # the vision tower trains here (vision_lr_scale 0.5), so its gradients were reduced too


def test_shutdown_distributed_leaves_no_process_group():
    """A launched script's main ends with the group destroyed (gloo's threads otherwise meet interpreter teardown)."""
    code = ("import torch, torch.distributed as dist\n"
            "from uniopd_mm.training.deepspeed_engine import init_distributed, shutdown_distributed\n"
            "init_distributed(60)\n"
            "t = torch.ones(2); dist.all_reduce(t); assert t.tolist() == [1.0, 1.0]\n"
            "shutdown_distributed(); assert not dist.is_initialized()\n"
            "shutdown_distributed()\n"  # a second call is a no-op
            "print('ok')\n")
    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def _launch(cfg_path, script="train_mm.py"):
    """``deepspeed --num_gpus 2 scripts/<script> --config <cfg_path>`` on the CPU (gloo); fails with its output."""
    from conftest import ROOT

    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(_free_port()),
           str(ROOT / "scripts" / script), "--config", str(cfg_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_cross_modal_zero3_on_two_processes_equals_zero2(tiny_dir, synth_dir, tmp_path):
    """The paper's cross-modal setting (scripts/configs/tiny_cross_modal.yaml: text prompts for an LLM
    teacher, image prompts for an MLLM teacher) on 2 processes: ZeRO-3 runs, with text-only and visual
    prompts on different ranks in one step, and its first step equals ZeRO-2's on the same data."""
    import json

    import yaml
    from transformers import AutoModelForImageTextToText

    from conftest import ROOT, TINY_PIXELS

    base = yaml.safe_load((ROOT / "scripts" / "configs" / "tiny_cross_modal.yaml").read_text())
    base["student"].update(path=str(tiny_dir / "qwen2_vl-student"), processor=TINY_PIXELS)
    base["teachers"]["llm"]["path"] = str(tiny_dir / "qwen3-teacher")
    base["teachers"]["mllm"].update(path=str(tiny_dir / "qwen2_vl-teacher"), processor=TINY_PIXELS)
    for entry in base["data"]["mixture"]:
        entry["path"] = str(synth_dir / Path(entry["path"]).name)
    base["rollout"] = {"n": 2, "max_new_tokens": 8}
    base["logging"] = {"progress": False, "tensorboard": False}
    runs = {}
    for stage in (2, 3):
        out = tmp_path / f"zero{stage}"
        cfg = {**base, "output_dir": str(out), "seed": 1,
               "train": {**base["train"], "engine": "deepspeed", "zero_stage": stage, "steps": 1, "save_every": 0,
                         "prompts_per_step": 4, "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 0,
                         "collective_timeout_s": 60}}
        (tmp_path / f"z{stage}.yaml").write_text(yaml.safe_dump(cfg))
        _launch(tmp_path / f"z{stage}.yaml")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        state = json.loads((out / "checkpoints" / "step_000001" / "trainer_state.json").read_text())
        # the exported checkpoint as a user loads it (ZeRO-2 and ZeRO-3 spell the file's keys differently)
        weights = AutoModelForImageTextToText.from_pretrained(out / "checkpoints" / "step_000001" / "hf").state_dict()
        runs[stage] = (rows[-1], state["seen_ids"][0], weights)
    (m2, ids2, w2), (m3, ids3, w3) = runs[2], runs[3]
    # the step mixed the modalities across ranks: prompt k goes to rank k % 2
    text_ids = {json.loads(line)["id"] for line in (synth_dir / "train_text.jsonl").read_text().splitlines()}
    per_rank = [{i in text_ids for i in ids3[r::2]} for r in range(2)]
    assert per_rank[0] != per_rank[1] or per_rank[0] == {True, False}, (ids3, per_rank)
    assert ids2 == ids3
    for k in ("opd/reverse_kl", "response/tokens", "train/loss", "train/grad_norm"):
        assert m3[k] == pytest.approx(m2[k], rel=1e-4, abs=1e-6), k
    assert m3["train/skipped"] == 0.0 and m3["train/grad_norm"] > 0
    for k, v in w2.items():
        close = ((w3[k].float() - v.float()).abs() <= 2e-6).float().mean().item()
        assert close >= 0.999, (k, close)


def test_sft_on_two_processes_with_uneven_shards(tiny_dir, synth_dir, tmp_path):
    """`deepspeed --num_gpus 2 scripts/sft.py` under ZeRO-3: 3 prompts a step, 1 per micro-batch, so rank 0
    runs two micro-batches and rank 1 one (padded to two). Without the padding rank 0's second forward waits
    on rank 1 for ever (here: the 30 s collective timeout)."""
    import json

    import yaml

    from conftest import ROOT, TINY_PIXELS

    out = tmp_path / "sft"
    cfg = yaml.safe_load((ROOT / "scripts" / "configs" / "sft_tiny_teacher.yaml").read_text())
    cfg.update(output_dir=str(out), rollout={"max_new_tokens": 8}, logging={"progress": False, "tensorboard": False})
    cfg["student"].update(path=str(tiny_dir / "qwen2_vl-student"), processor=TINY_PIXELS)
    cfg["data"] = {"train_path": str(synth_dir / "train.jsonl"), "test_path": str(synth_dir / "test.jsonl")}
    cfg["train"] = {"engine": "deepspeed", "zero_stage": 3, "steps": 2, "prompts_per_step": 3, "micro_batch_size": 1,
                    "lr": 1e-3, "warmup_steps": 0, "eval_every": 2, "eval_samples": 4, "collective_timeout_s": 30}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(cfg))
    _launch(tmp_path / "sft.yaml", "sft.py")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["train/skipped"] == 0.0 and r["train/grad_norm"] > 0 for r in rows)
    assert "eval/accuracy" in rows[-1]
    assert (out / "final" / "config.json").exists()
