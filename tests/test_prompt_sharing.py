"""Each distinct prompt run once (``train.share_prompts`` / ``teacher.share_prompts``): the same
log-probs and gradients as the full forward, the groups found by hand, the fall-backs; and the
compile-or-eager wrapper behind ``teacher.compile`` / ``rollout.compile_decoder``."""

from __future__ import annotations

import pytest
import torch

from uniopd_mm.models import CompiledOrEager, prompt_groups, response_logits, score_response_tokens


@pytest.fixture(scope="module")
def text_batch(tiny_dir, synth_samples):
    from processors import make_processor

    proc = make_processor("text", str(tiny_dir / "qwen3-student"))
    texts = [s for s in synth_samples if s.modality == "text"]
    prompts = [proc.encode_prompt(s) for s in texts[:3]]
    prompts[1].prompt_ids = prompts[1].prompt_ids[2:]  # a shorter prompt: left padding inside the shared part
    rows = [0, 0, 1, 1, 1, 2]  # groups of 2, 3 and 1 samples
    gen = torch.Generator().manual_seed(0)
    responses = [torch.randint(5, 300, (n,), generator=gen).tolist() for n in (7, 3, 9, 1, 5, 8)]
    return proc.training_batch([prompts[i] for i in rows], responses), rows


def test_prompt_groups_by_hand(text_batch):
    batch, rows = text_batch
    first, inverse = prompt_groups(batch, None)
    # every row points at a row with its own prompt; each group's first row is its representative
    assert [rows[int(first[g])] for g in inverse] == rows
    assert sorted(first.tolist()) == [0, 2, 5]
    single = {k: v[[0, 2, 5]] for k, v in batch.items()}  # no prompt repeats: groups of one (same forwards)
    first, inverse = prompt_groups(single, None)
    assert sorted(first.tolist()) == [0, 1, 2] and sorted(inverse.tolist()) == [0, 1, 2]
    # visual inputs without a Qwen-VL model (or without collate's prompt_group) keep the full forward
    assert prompt_groups({**batch, "pixel_values": torch.zeros(1)}, None) is None


@pytest.mark.parametrize("model_name", ["qwen3-student", "qwen3-teacher"])
def test_shared_prompt_forward_equals_the_full_forward(tiny_dir, text_batch, model_name):
    from transformers import AutoModelForCausalLM

    batch, _ = text_batch
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / model_name)
    mask = batch["response_mask"].bool()
    grads = []
    losses = []
    for share in (False, True):
        model.zero_grad()
        logits = response_logits(model, batch, share_prompts=share)
        loss = (logits.float().log_softmax(-1).gather(-1, batch["responses"][..., None])[..., 0] * mask).sum()
        loss.backward()
        losses.append(logits.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert losses[0].shape == losses[1].shape
    assert (losses[0] - losses[1])[mask].abs().max() < 1e-4
    assert max((a - b).abs().max().item() for a, b in zip(*grads)) < 1e-4
    assert any(g.abs().sum() > 0 for g in grads[1])  # gradients reach the weights through the shared prompt
    with torch.no_grad():
        full = score_response_tokens(model, batch)["logprobs"]
        shared = score_response_tokens(model, batch, share_prompts=True)["logprobs"]
    assert (full - shared)[mask].abs().max() < 1e-4


def test_gradient_checkpointing_keeps_the_full_forward(tiny_dir, text_batch):
    from transformers import AutoModelForCausalLM

    batch, _ = text_batch
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen3-student")
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    assert prompt_groups(batch, model) is None  # the layers would drop the KV cache the sharing needs
    model.eval()
    with torch.no_grad():
        assert prompt_groups(batch, model) is not None  # no backward, no checkpointing: the cache is kept


def test_a_training_step_sharing_prompts(tiny_dir, synth_dir, tmp_path):
    from conftest import tiny_config

    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.trainer import Trainer

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "share", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=["train.steps=2", "train.share_prompts=true", "teacher.share_prompts=true",
                                                "rollout.reuse_logprobs=false"])
    Trainer(cfg).train()
    rows = read_metrics(tmp_path / "share" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/grad_norm"] > 0 for r in rows)
    # pi_old from the shared forward agrees with the rollout's own log-probs
    assert all(r["rollout/logprob_mismatch"] < 1e-4 for r in rows)


def test_a_teacher_that_renders_alike_reuses_the_students_encoded_prompts(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """The tiny Qwen2-VL teacher renders prompts as the student does, so a step encodes each prompt once (its
    images decoded once) for both; with another pixel budget the teacher encodes its own, as its processor
    alone would."""
    from conftest import tiny_config

    import processors.qwen2_vl as qwen2_vl
    from processors import make_processor
    from uniopd_mm.trainer import Trainer

    calls = []
    real = qwen2_vl.Processor.encode_prompt
    monkeypatch.setattr(qwen2_vl.Processor, "encode_prompt",
                        lambda self, sample: calls.append((self.options.image_max_pixels, sample.id)) or real(self, sample))
    # no preflight: it scores a record through the teacher before step 1, and this test counts encodings
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "alike", overrides=["train.preflight=false"]))
    (teacher,) = trainer.teachers.values()
    assert teacher.encode is trainer.prompts.encode
    trainer.train_step()
    drawn = trainer.seen_ids[0]
    assert sorted(i for _, i in calls) == sorted(drawn)  # once each, by the one shared cache

    calls.clear()
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "other",
                                  overrides=["teacher.processor.image_max_pixels=3136", "train.preflight=false"]))
    (teacher,) = trainer.teachers.values()
    assert teacher.encode is not trainer.prompts.encode
    trainer.train_step()
    drawn = trainer.seen_ids[0]
    assert sorted(i for px, i in calls if px == 50176) == sorted(drawn)  # the student's encodings
    assert sorted(i for px, i in calls if px == 3136) == sorted(drawn)  # and the teacher's own
    image = next(s for s in trainer.samples if s.id in drawn and s.modality == "image")
    own = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-teacher"), options=teacher.processor.options)
    expected = own.encode_prompt(image)
    got = teacher.encode(image)
    assert got.prompt_ids == expected.prompt_ids
    assert torch.equal(got.features["image_grid_thw"], expected.features["image_grid_thw"])
    assert got.prompt_ids != trainer.prompts.encode(image).prompt_ids  # the two budgets do render this image apart


def test_teacher_options_need_the_hf_backend():
    from uniopd_mm.config import TeacherConfig
    from uniopd_mm.config_base import ConfigError, from_dict

    for name in ("compile", "share_prompts"):
        with pytest.raises(ConfigError, match=f"teacher {name}: applies to backend hf"):
            from_dict(TeacherConfig, {"path": "x", "family": "text", "backend": "served", "url": "http://127.0.0.1:1",
                                      "served_model_name": "m", name: True}, prefix="teacher")


def test_compiled_or_eager_falls_back_when_the_compiler_fails(monkeypatch):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls = []

    def double(x):
        calls.append(x)
        return 2 * x

    f = CompiledOrEager(double, "double")
    with pytest.warns(UserWarning, match="torch.compile of double failed .*no C\\+\\+ compiler.*running it eagerly"):
        assert f(torch.tensor(3)).item() == 6
    assert f.compiled is None and f(torch.tensor(4)).item() == 8 and len(calls) == 2


def test_compiled_or_eager_lets_a_bad_input_raise(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiled" = the function itself

    def needs_positive(x):
        if x < 0:
            raise ValueError("negative input")
        return x

    f = CompiledOrEager(needs_positive, "f")
    with pytest.raises(ValueError, match="negative input"):
        f(-1)
    assert f.compiled is not None and f(2) == 2  # the compiler was not at fault: it stays on


def test_compiled_teacher_scores_like_the_eager_one(tiny_dir, synth_samples):
    from transformers import AutoModelForCausalLM

    from processors import make_processor
    from uniopd_mm.teacher.hf import HFTeacher

    path = tiny_dir / "qwen3-teacher"
    proc = make_processor("text", str(path))
    samples = [s for s in synth_samples if s.modality == "text"][:3]
    samples = [s for s in samples for _ in range(2)]
    gen = torch.Generator().manual_seed(1)
    responses = [torch.randint(5, 300, (n,), generator=gen).tolist() for n in (4, 6, 2, 5, 3, 6)]
    model = AutoModelForCausalLM.from_pretrained(path)
    eager = HFTeacher(model, proc, device="cpu").score(samples, responses)
    for share in (False, True):
        compiled = HFTeacher(model, proc, device="cpu", compile=True, share_prompts=share)
        got = compiled.score(samples, responses)
        assert compiled.backbone.compiled is not None  # it really ran compiled, no fall-back
        assert not got.failed.any() and torch.allclose(got.logprobs, eager.logprobs, atol=1e-4)
        assert torch.equal(got.token_mask, eager.token_mask)


def test_deepspeed_zero3_step_sharing_prompts_matches_torch(tiny_dir, text_batch, monkeypatch):
    from uniopd_mm.models import scoring as models
    from uniopd_mm.algo.loss import aggregate
    from uniopd_mm.config import ModelConfig, TrainConfig
    from uniopd_mm.models import load_model, response_logprobs
    from uniopd_mm.training import make_training_engine

    batch, _ = text_batch
    mcfg = ModelConfig(path=str(tiny_dir / "qwen3-student"), family="text")
    n_tok = float(batch["response_mask"].sum())
    shared_calls = []
    real = models.forward_sharing_prompts
    monkeypatch.setattr(models, "forward_sharing_prompts", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
    results = []
    for engine_name, share, extra in (("torch", False, {}), ("deepspeed", True, {"zero_stage": 3})):
        torch.manual_seed(0)
        cfg = TrainConfig(engine=engine_name, lr=1e-2, warmup_steps=0, grad_clip=1.0, **extra)
        engine = make_training_engine(engine_name, model_loader=lambda: load_model(mcfg), train_cfg=cfg)

        def nll(model, rows, share=share):
            part = {k: v[rows] for k, v in batch.items()}
            lp = response_logprobs(model, part, share_prompts=share)["logprobs"]
            return aggregate(-lp, part["response_mask"], "token_mean", n_tok), {}

        results.append(engine.train_step([[0, 1, 2], [3, 4, 5]], nll))  # each micro-batch repeats a prompt
    ref, ds = results
    assert len(shared_calls) == 2  # both DeepSpeed micro-batches took the shared path
    assert ds["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-5)
    assert ds["train/grad_norm"] == pytest.approx(ref["train/grad_norm"], rel=1e-4)


def test_lora_student_shares_prompts(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """A PEFT-wrapped student: the cache argument is named after the inner model's forward."""
    import warnings

    from conftest import tiny_config

    from uniopd_mm.models import scoring as models
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.trainer import Trainer

    shared_calls = []
    real = models.forward_sharing_prompts
    monkeypatch.setattr(models, "forward_sharing_prompts", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "lora", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=["train.steps=1", "train.lora.enabled=true", "train.share_prompts=true",
                                                "rollout.reuse_logprobs=false"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg).train()
    assert shared_calls  # pi_old and the update took the shared path
    assert not [w for w in caught if "past_key_values" in str(w.message)]  # the inner model's name: `cache`
    row = read_metrics(tmp_path / "lora" / "metrics.jsonl")[0]
    assert row["rollout/logprob_mismatch"] < 1e-4 and row["train/grad_norm"] > 0


def _vl_batch(tiny_dir, synth_samples, tiny_processor_options, family, rows, modalities=("image", "video", "text")):
    from dataclasses import asdict

    from transformers import AutoModelForImageTextToText

    from processors import make_processor

    path = tiny_dir / f"{family}-student"
    proc = make_processor(family, str(path), options=asdict(tiny_processor_options))
    picked = [s for m in modalities for s in [x for x in synth_samples if x.modality == m][:2]]
    prompts = [proc.encode_prompt(s) for s in picked]
    allowed = [i for i in range(5, 300) if i not in set(proc.suppressed_token_ids)]
    gen = torch.Generator().manual_seed(0)
    responses = [[allowed[j] for j in torch.randint(0, len(allowed), (int(n),), generator=gen).tolist()]
                 for n in torch.randint(1, 9, (len(rows),), generator=gen)]
    batch = proc.training_batch([prompts[i] for i in rows], responses)
    return AutoModelForImageTextToText.from_pretrained(path), batch, prompts


def _assert_shared_equals_full(model, batch):
    mask = batch["response_mask"].bool()
    outs, grads = [], []
    model.train()
    for share in (False, True):
        model.zero_grad()
        logits = response_logits(model, batch, share_prompts=share)
        (logits.float().log_softmax(-1).gather(-1, batch["responses"][..., None])[..., 0] * mask).sum().backward()
        outs.append(logits.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert (outs[0] - outs[1])[mask].abs().max() < 1e-4
    assert grads[0].keys() == grads[1].keys() and any("visual" in n for n in grads[1])  # the vision tower learns too
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) < 1e-4
    model.eval()
    with torch.no_grad():
        full = score_response_tokens(model, batch)["logprobs"]
        shared = score_response_tokens(model, batch, share_prompts=True)["logprobs"]
    assert (full - shared)[mask].abs().max() < 1e-4


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_shared_prompts_with_images_and_videos_equal_the_full_forward(tiny_dir, synth_samples,
                                                                     tiny_processor_options, family):
    # rows: 2 images, 2 videos, 2 text prompts, in groups of 1 to 3 samples (M-RoPE positions, the
    # visual tensors of each group's first row, left padding)
    rows = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5]
    model, batch, _ = _vl_batch(tiny_dir, synth_samples, tiny_processor_options, family, rows)
    first, inverse = prompt_groups(batch, model)
    assert len(first) == 6 and [rows[int(first[g])] for g in inverse] == rows
    _assert_shared_equals_full(model, batch)


def test_equal_tokens_with_other_pixels_are_not_shared(tiny_dir, synth_samples, tiny_processor_options):
    import copy

    model, _, prompts = _vl_batch(tiny_dir, synth_samples, tiny_processor_options, "qwen2_vl", [0])
    other = copy.copy(prompts[0])  # the same tokens, another image
    other.features = {**prompts[0].features, "pixel_values": prompts[0].features["pixel_values"].flip(0)}
    from processors import make_processor

    proc = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"))
    a, b, c = proc.tokenizer("red blue green", add_special_tokens=False)["input_ids"][:3]
    batch = proc.training_batch([prompts[0], prompts[0], other, other], [[a, b], [c], [a, b], [c, b, a]])
    first, inverse = prompt_groups(batch, model)
    assert inverse.tolist()[:2] == [inverse[0]] * 2 and inverse[2] != inverse[0] and len(first) == 2
    _assert_shared_equals_full(model, batch)


def test_text_prompts_on_a_vl_model_after_a_visual_forward(tiny_dir, synth_samples, tiny_processor_options):
    """A VL model keeps the M-RoPE offsets of its last visual forward (rope_deltas); a text-only batch
    shared afterwards must still get the full forward's positions."""
    model, visual, _ = _vl_batch(tiny_dir, synth_samples, tiny_processor_options, "qwen2_vl", [0, 0, 1])
    with torch.no_grad():
        response_logits(model, visual)
    _, text, _ = _vl_batch(tiny_dir, synth_samples, tiny_processor_options, "qwen2_vl", [0, 0, 1, 1],
                           modalities=("text",))
    assert "pixel_values" not in text
    mask = text["response_mask"].bool()
    with torch.no_grad():
        full, shared = response_logits(model, text), response_logits(model, text, share_prompts=True)
    assert (full - shared)[mask].abs().max() < 1e-4


def test_hf_teacher_scores_at_the_rollout_temperature(tiny_dir, synth_samples):
    """RECIPE 7 at T = 0.7: the teacher's log-probs are log softmax(z / 0.7) over the vocabulary less the
    never-sampled ids, from a direct transformers forward."""
    from transformers import AutoModelForCausalLM

    from processors import make_processor
    from uniopd_mm.teacher.hf import HFTeacher

    path = str(tiny_dir / "qwen3-teacher")
    proc = make_processor("text", path)
    samples = [s for s in synth_samples if s.modality == "text"][:2]
    responses = [[100, 101, 102, 103], [7, 8]]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    got = HFTeacher(model, proc, temperature=0.7, device="cpu").score(samples, responses)
    for i, (s, r) in enumerate(zip(samples, responses)):
        ids = torch.tensor([proc.encode_prompt(s).prompt_ids + r])
        with torch.no_grad():
            z = model(input_ids=ids).logits[0, -len(r) - 1:-1].float()
        z[:, proc.suppressed_token_ids] = float("-inf")
        ref = torch.log_softmax(z / 0.7, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
        assert torch.allclose(got.logprobs[i, : len(r)], ref, atol=1e-5)
        at_one = torch.log_softmax(z, -1).gather(-1, torch.tensor(r)[:, None])[:, 0]
        assert (got.logprobs[i, : len(r)] - at_one).abs().max() > 1e-2  # the temperature matters here
