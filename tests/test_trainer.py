"""The OPD trainer end to end on tiny models: image and video prompts, checkpoints, resume, LoRA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _logits(model, proc, samples):
    batch = proc.rollout_batch([proc.encode_prompt(s) for s in samples])
    with torch.no_grad():
        return model(**batch).logits


def test_two_steps_with_image_and_video_prompts(tiny_dir, synth_dir, synth_samples, tmp_path):
    from transformers import AutoModelForImageTextToText

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", overrides=["train.prompts_per_step=12"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.engine.module.state_dict().items()}
    result = trainer.train()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(r[k] is not None for k in ("train/loss", "train/grad_norm", "opd/reverse_kl"))
        assert r["train/skipped"] == 0.0 and r["teacher/failed"] == 0.0
        stages = [r[f"time/{stage}"] for stage in ("rollout", "verify", "old_logprobs", "teacher", "advantages",
                                                   "update", "sync")]
        # the stages that compute took time, and all seven lie inside the step's own time
        assert min(r[f"time/{s}"] for s in ("rollout", "old_logprobs", "teacher", "update")) > 0.0
        assert 0.0 <= min(stages) and sum(stages) <= r["time/step"]
    # the step's prompts covered images and videos
    ids = {i for step in trainer.seen_ids for i in step}
    by_id = {json.loads(line)["id"]: json.loads(line) for line in open(synth_dir / "train.jsonl")}
    modalities = {("video" if "video" in str(by_id[i]["messages"]) else "image" if "image" in str(by_id[i]["messages"]) else "text")
                  for i in ids}
    assert {"image", "video"} <= modalities
    after = trainer.engine.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the exported checkpoint reloads with identical logits
    hf = Path(result["checkpoint"]) / "hf"
    reloaded = AutoModelForImageTextToText.from_pretrained(hf).eval()
    samples = [s for s in synth_samples if s.modality == "video"][:1] + [s for s in synth_samples if s.modality == "image"][:2]
    trainer.engine.module.eval()
    assert torch.equal(_logits(reloaded, trainer.student_proc, samples), _logits(trainer.engine.module, trainer.student_proc, samples))
    assert (hf / "preprocessor_config.json").exists() or (hf / "processor_config.json").exists()


def test_save_every_minus_one_writes_no_checkpoint(tiny_dir, synth_dir, tmp_path):
    result = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path, overrides=["train.steps=1", "train.save_every=-1"])).train()
    assert "checkpoint" not in result
    assert not any((tmp_path / "checkpoints").glob("*"))  # an absent folder globs to nothing as well
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_resume_sees_the_same_prompts_and_weights(tiny_dir, synth_dir, tmp_path):
    full = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "a", overrides=["train.steps=4", "train.save_every=2"]))
    full.train()
    part = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "b", overrides=["train.steps=2"]))
    part.train()
    resumed = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "b", overrides=["train.steps=4", "train.save_every=2"]))
    assert resumed.step == 2
    resumed.train()
    assert resumed.seen_ids == full.seen_ids and len(full.seen_ids) == 4
    a, b = full.engine.module.state_dict(), resumed.engine.module.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    state = json.loads((tmp_path / "b" / "checkpoints" / "step_000004" / "trainer_state.json").read_text())
    assert state["seen_ids"] == full.seen_ids
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_half_written_checkpoint_is_never_loaded(tiny_dir, synth_dir, tmp_path):
    Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "c", overrides=["train.steps=1"])).train()
    root = tmp_path / "c" / "checkpoints"
    (root / ".tmp-step_000009").mkdir()
    (root / "step_000007").mkdir()  # no COMPLETE marker
    t = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "c", overrides=["train.steps=2"]))
    assert t.step == 1


def test_lora_trains_adapters_and_exports_merged(tiny_dir, synth_dir, synth_samples, tmp_path):
    from transformers import AutoModelForImageTextToText

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "lora", overrides=["train.steps=1", "train.lora.enabled=true",
                                                                        "train.lr=5e-2"])
    trainer = Trainer(cfg)
    trainable = [n for n, p in trainer.engine.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    result = trainer.train()
    merged = AutoModelForImageTextToText.from_pretrained(Path(result["checkpoint"]) / "hf").eval()
    assert not any("lora" in k for k in merged.state_dict())
    samples = [s for s in synth_samples if s.modality == "image"][:2]
    trainer.engine.module.eval()
    ours = _logits(trainer.engine.module, trainer.student_proc, samples)
    base = AutoModelForImageTextToText.from_pretrained(tiny_dir / "qwen2_vl-student").eval()
    assert torch.allclose(_logits(merged, trainer.student_proc, samples), ours, atol=1e-5)
    assert not torch.allclose(_logits(base, trainer.student_proc, samples), ours, atol=1e-5)


def test_gradient_checkpointing_step(tiny_dir, synth_dir, tmp_path):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "gc", overrides=["train.steps=1", "train.gradient_checkpointing=true"])
    trainer = Trainer(cfg)
    assert trainer.engine.module.is_gradient_checkpointing
    trainer.train()
    row = read_metrics(tmp_path / "gc" / "metrics.jsonl")[0]
    assert row["train/grad_norm"] > 0 and row["train/skipped"] == 0.0


def test_time_budget_stops_early_and_evaluates_last(tiny_dir, synth_dir, tmp_path):
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "tb", overrides=[
        "train.steps=50", "train.time_budget_s=0.001", "train.eval_every=25", "train.eval_samples=4"])
    Trainer(cfg).train()
    rows = read_metrics(tmp_path / "tb" / "metrics.jsonl")
    # step 0 is the evaluation before training; the first step already exceeds 1 ms, so training stops there
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[1]["eval/accuracy"] is not None and rows[1]["time/train_elapsed"] == pytest.approx(rows[1]["time/step"])


@pytest.mark.parametrize("loss", ["reverse_kl", "jsd"])
def test_distribution_losses_run(tiny_dir, synth_dir, tmp_path, loss):
    support = "full" if loss == "reverse_kl" else "topk"
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / loss, overrides=[
        "train.steps=1", f"algo.loss={loss}", f"algo.distill_support={support}", "algo.topk=8", "algo.kl_coef=0.1",
        "algo.entropy_coef=0.01"])
    result = Trainer(cfg).train()
    rows = read_metrics(tmp_path / loss / "metrics.jsonl")
    assert rows[0]["train/loss"] is not None and rows[0]["train/grad_norm"] > 0
    assert "checkpoint" in result


@pytest.mark.parametrize("student, family, stage", [("qwen3-student", "text", 3), ("qwen2_vl-student", "qwen2_vl", 2)])
def test_two_process_deepspeed(tiny_dir, synth_dir, tmp_path, student, family, stage):
    """`deepspeed --num_gpus 2 scripts/train_mm.py` on the CPU: ZeRO-3 (text student, with the static
    decoder and shared prompts) and ZeRO-2 (VL student on mixed image/video/text prompts), gloo,
    prompts sharded."""
    out = tmp_path / "ds"
    cfg = tmp_path / "cfg.yaml"
    import yaml

    teacher = "qwen3-teacher" if family == "text" else "qwen2_vl-teacher"
    c = tiny_config(tiny_dir, synth_dir, out, student=student, teacher=teacher, family=family)
    from dataclasses import asdict

    d = asdict(c)
    d["train"].update(engine="deepspeed", zero_stage=stage, steps=2, save_every=0)
    if family == "text":  # the fast text settings under ZeRO-3 on two processes
        d["rollout"]["decoder"] = "static"
        d["train"]["share_prompts"] = d["teacher"]["share_prompts"] = True
        # 5 prompts x 2 samples: rank 0 has 6 rows (micro-batches of 4 and 2), rank 1 has 4 rows and a
        # padded 1-row micro-batch without a repeated prompt; both must run the same forwards
        d["train"].update(prompts_per_step=5, micro_batch_size=4, collective_timeout_s=60)
    cfg.write_text(yaml.safe_dump(d))
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(29617 + stage),
           str(ROOT / "scripts" / "train_mm.py"), "--config", str(cfg)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["train/grad_norm"] is not None and r["train/grad_norm"] > 0 for r in rows)
    assert all(r["teacher/failed"] == 0.0 for r in rows)
    # the rollout's log-probs (the static decoder's, for text) agree with the ZeRO engine's recomputation
    assert all(r["rollout/logprob_mismatch"] < 1e-4 for r in rows)
    state = json.loads((out / "checkpoints" / "step_000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert (out / "checkpoints" / "step_000002" / "hf" / "config.json").exists()


@pytest.mark.parametrize("threshold", [None, 1e-6])
def test_logratio_drops_are_counted_apart_from_other_masks(tiny_dir, synth_dir, tmp_path, threshold):
    value = "null" if threshold is None else threshold
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "lr", overrides=[
        "train.steps=1", f"algo.logratio_threshold={value}", "algo.balance.enabled=true"])
    Trainer(cfg).train()
    row = read_metrics(tmp_path / "lr" / "metrics.jsonl")[0]
    if threshold is None:
        assert row["opd/logratio_dropped_tokens"] == 0
    else:  # no token's |log pi_theta - log pi_T| is below 1e-6: every scored token is dropped, none counted
        assert row["teacher/failed"] == 0 and row["opd/logratio_dropped_tokens"] == row["response/tokens"]
        assert row["opd/counted_tokens"] == 0 and row["opd/masked_tokens"] == row["response/tokens"]


def test_reusing_rollout_logprobs_gives_the_same_step(tiny_dir, synth_dir, tmp_path):
    rows = {}
    for reuse in (False, True):
        cfg = tiny_config(tiny_dir, synth_dir, tmp_path / f"reuse{reuse}", overrides=[
            "train.steps=1", f"rollout.reuse_logprobs={str(reuse).lower()}"])
        Trainer(cfg).train()
        rows[reuse] = read_metrics(tmp_path / f"reuse{reuse}" / "metrics.jsonl")[0]
    # same seed, same samples; pi_old from the rollout agrees with the recomputed one to ~1e-7
    assert rows[True]["response/tokens"] == rows[False]["response/tokens"]
    assert rows[True]["train/loss"] == pytest.approx(rows[False]["train/loss"], rel=1e-4, abs=1e-6)
    assert rows[True]["train/grad_norm"] == pytest.approx(rows[False]["train/grad_norm"], rel=1e-4)
    assert rows[False]["rollout/logprob_mismatch"] < 1e-5 and "rollout/logprob_mismatch" not in rows[True]


@pytest.mark.parametrize("stage, settings", [("rollout", "rollout.n"), ("update", "train.micro_batch_size")])
def test_cuda_out_of_memory_names_the_stage_and_what_to_lower(tiny_dir, synth_dir, tmp_path, monkeypatch, stage,
                                                              settings):
    """torch's own CUDA OOM error, raised in step 2 (step 1 was checkpointed): the run stops with a message
    naming the stage and the settings to lower; the checkpoints on disk are step 1's, complete."""
    from uniopd_mm.trainer import StageOutOfMemory

    t = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / stage, overrides=["train.steps=3", "train.save_every=1"]))
    target = t.rollout if stage == "rollout" else t.engine
    method = "generate" if stage == "rollout" else "train_step"
    original = getattr(target, method)

    def fails_in_step_2(*args, **kwargs):
        if t.step == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, method, fails_in_step_2)
    with pytest.raises(StageOutOfMemory) as err:
        t.train()
    msg = str(err.value)
    assert f"in the {stage} stage" in msg and settings in msg and "step 2" in msg and "Tried to allocate" in msg
    root = tmp_path / stage / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]
    assert (root / "step_000001" / "COMPLETE").exists()
    assert Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / stage, overrides=["train.steps=3"])).step == 1


def test_a_recipe_on_unverifiable_records_warns_and_logs_the_unknown_share(tiny_dir, synth_dir, tmp_path):
    """Records whose domain has no verifier: every verdict is unknown, so balancing and the margin shift do nothing.
    Loading warns; every step logs reward/unknown_frac."""
    lines = [json.loads(x) for x in (synth_dir / "train_text.jsonl").read_text().splitlines()]
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps({**r, "domain": "my-task"}) + "\n" for r in lines))
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=[f"data.train_path={data}", "algo.preset=uniopd_text", "train.steps=1"])
    with pytest.warns(UserWarning, match=r"have no verifier for their domain \(e.g. \['my-task'\]\)"):
        t = Trainer(cfg)
    t.train()
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert row["reward/unknown_frac"] == 1.0 and row["reward/verified_frac"] == 0.0


@pytest.mark.parametrize("advantage", ["grpo", "opd+outcome", "constant"])
def test_outcome_baselines_use_the_verifier_reward(tiny_dir, synth_dir, tmp_path, monkeypatch, advantage):
    """GRPO never calls the teacher and its advantages are the group-normalised outcomes; OPD plus the outcome
    adds exactly outcome_coef times those to the OPD advantages; the constant control calls no teacher and puts
    algo.constant_advantage on every counted token."""
    import itertools

    from uniopd_mm.algo.outcome import group_normalised_outcome

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / advantage, overrides=[
        f"algo.advantage={advantage}", "algo.outcome_coef=2.0", "algo.constant_advantage=-0.5", "train.steps=1",
        "rollout.n=4"])
    trainer = Trainer(cfg)
    outcomes = itertools.cycle([True, False, False, None])  # the random student is never right: mixed groups by hand
    monkeypatch.setattr("uniopd_mm.trainer.verify", lambda sample, text: next(outcomes))
    calls = []
    original = trainer.score_by_teacher
    monkeypatch.setattr(trainer, "score_by_teacher", lambda *a: calls.append(1) or original(*a))
    seen = {}
    calibrate = trainer.calibrate

    def spy(teacher_logprobs, old_logprobs, loss_mask, correct, group_ids, *args):
        advantages, mask, metrics = calibrate(teacher_logprobs, old_logprobs, loss_mask, correct, group_ids, *args)
        seen.update(teacher_logprobs=teacher_logprobs, old_logprobs=old_logprobs, mask=mask, correct=correct,
                    group_ids=group_ids, advantages=advantages)
        return advantages, mask, metrics

    monkeypatch.setattr(trainer, "calibrate", spy)
    trainer.train()
    outcome = group_normalised_outcome(torch.where(seen["mask"].sum(-1) > 0, seen["correct"], -1), seen["group_ids"])
    opd = (seen["teacher_logprobs"] - seen["old_logprobs"]) * seen["mask"]
    if advantage == "grpo":
        assert not calls
        assert torch.allclose(seen["advantages"], outcome[:, None] * seen["mask"])
    elif advantage == "constant":
        assert not calls and seen["mask"].sum() > 0
        assert torch.equal(seen["advantages"], -0.5 * seen["mask"])
    else:
        assert calls
        assert torch.allclose(seen["advantages"], opd + 2.0 * outcome[:, None] * seen["mask"], atol=1e-6)
    assert outcome.abs().sum() > 0  # some group had both outcomes, so the check above had something to compare
    row = read_metrics(tmp_path / advantage / "metrics.jsonl")[-1]
    assert row["margin/mixed_groups"] == 6  # each of the 6 prompts' 4 outcomes: True, False, False, unknown
    # the order of the teacher's guidance is measured only where a teacher ran
    assert ("margin/inversion_rate" in row) == (advantage == "opd+outcome")


@pytest.mark.parametrize("advantage", ["grpo", "constant"])
def test_teacherless_advantages_refuse_margin_calibration(advantage):
    from uniopd_mm.config import AlgoConfig, ConfigError, MarginConfig

    with pytest.raises(ConfigError, match=f"{advantage} uses no teacher"):
        AlgoConfig(advantage=advantage, margin=MarginConfig(shift=True))


@pytest.mark.parametrize("truncated", ["keep", "drop"])
def test_truncated_responses_keep_or_leave_the_loss(tiny_dir, synth_dir, tmp_path, monkeypatch, truncated):
    """A 3-token cap cuts every response the random student writes: kept, they are scored like the others; dropped,
    none of their tokens is counted, and a response that ended keeps its tokens (one rollout is marked finished by
    hand)."""
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / truncated, overrides=[
        f"algo.truncated={truncated}", "rollout.max_new_tokens=3", "train.steps=1", "rollout.n=2",
        "algo.logratio_threshold=null"])
    trainer = Trainer(cfg)
    generate = trainer.rollout.generate

    def first_finished(prompts, params):
        out = generate(prompts, params)
        out.finished = [True] + [False] * (len(out.finished) - 1)
        return out

    monkeypatch.setattr(trainer.rollout, "generate", first_finished)
    seen = {}
    calibrate = trainer.calibrate
    monkeypatch.setattr(trainer, "calibrate", lambda t, o, mask, *a: seen.setdefault("mask", mask) is None or
                        calibrate(t, o, mask, *a))
    trainer.train()
    row = read_metrics(tmp_path / truncated / "metrics.jsonl")[-1]
    lengths = seen["mask"].sum(-1)
    assert row["response/truncated_frac"] > 0.5
    if truncated == "keep":
        assert (lengths > 0).all()
    else:
        assert lengths[0] > 0 and (lengths[1:] == 0).all()
        assert row["opd/counted_tokens"] == lengths[0].item()


@pytest.mark.parametrize("reach", ["counted", "response"])
def test_margin_shift_reach(tiny_dir, synth_dir, tmp_path, reach):
    """Hand case: one group, a correct rollout whose last token the log-ratio mask dropped (log ratio -13) and an
    incorrect one rewarded +2 on its last token. Returns 0 and 2/3, margin -2/3, so Lift adds 2/3 to the correct
    rollout: on its counted tokens only (counted), or on the dropped token too, which then joins the loss."""
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / reach, overrides=[
        "algo.preset=opd", "algo.margin.shift=true", "algo.margin.direction=correct_up", "algo.margin.delta=0.0",
        f"algo.margin.reach={reach}"])
    trainer = Trainer(cfg)
    old_logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    teacher = torch.tensor([[-1.0, -1.0, -14.0], [-1.0, -1.0, 1.0]])
    loss_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    dropped = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    advantages, mask, metrics = trainer.calibrate(teacher, old_logprobs, loss_mask, torch.tensor([1, 0]), torch.tensor([0, 0]),
                                           ratio_dropped=dropped)
    lift = 2 / 3
    assert metrics["margin/inversion_rate"] == 1.0
    if reach == "counted":
        assert torch.allclose(advantages, torch.tensor([[lift, lift, 0.0], [0.0, 0.0, 2.0]]))
        assert torch.equal(mask, loss_mask)
    else:
        assert torch.allclose(advantages, torch.tensor([[lift, lift, lift], [0.0, 0.0, 2.0]]))
        assert torch.equal(mask, torch.ones(2, 3)) and metrics["margin/reached_tokens"] == 1.0


def test_teacher_batch_size_is_its_own_setting(tiny_dir, synth_dir, tmp_path):
    default = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "a", overrides=["train.micro_batch_size=5"]))
    own = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / "b", overrides=["train.micro_batch_size=5",
                                                                            "teacher.batch_size=3"]))
    assert [t.micro_batch_size for t in default.teachers.values()] == [5]
    assert [t.micro_batch_size for t in own.teachers.values()] == [3]


def test_samples_log_each_token_with_its_reward(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """logging.samples_every: the first rollouts of a step, token by token, each with log pi_T - log pi_old as the
    advantages stage saw them (captured here from the stage's own inputs)."""
    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=["logging.samples_every=2", "logging.samples_per_step=3", "train.steps=4",
                                                "algo.logratio_threshold=null"])
    trainer = Trainer(cfg)
    seen = []
    calibrate = trainer.calibrate
    monkeypatch.setattr(trainer, "calibrate", lambda t, o, *a: seen.append((t - o).clone()) or calibrate(t, o, *a))
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2, 4, 4, 4]
    for r in rows:
        assert len(r["tokens"]) == len(r["reward"]) == len(r["counted"]) and r["text"]
        step_ratio = seen[r["step"] - 1][rows.index(r) % 3]
        assert r["reward"] == pytest.approx(step_ratio[: len(r["reward"])].tolist(), abs=1e-3)


def test_merge_prompt_major_by_hand():
    from uniopd_mm.rollout import RolloutOutput, merge_prompt_major

    student = RolloutOutput([[1], [2], [3], [4]], [[-0.1], [-0.2], [-0.3], [-0.4]], [0, 0, 1, 1], [True, False, True, True])
    teacher = RolloutOutput([[9], [8]], [[-9.0], [-8.0]], [0, 1], [True, False])
    out = merge_prompt_major(student, teacher)
    assert out.responses == [[1], [2], [9], [3], [4], [8]] and out.prompt_index == [0, 0, 0, 1, 1, 1]
    assert out.from_teacher == [False, False, True, False, False, True]
    assert out.logprobs == [[-0.1], [-0.2], [], [-0.3], [-0.4], []]  # the teacher's are not the student's pi_old
    assert out.finished == [True, False, True, True, True, False]


def test_teacher_share_samples_part_of_each_group_from_the_teacher(tiny_dir, synth_dir, tmp_path, monkeypatch):
    """rollout.teacher_share=1 of n=2: each prompt's second sample is the teacher's. Greedy (set on the step's
    sampling settings: a near-zero temperature still breaks the random tiny models' near-ties at random), the
    teacher's sample equals plain transformers generate on the teacher with its prompt; the step's truncation
    metric counts the student's samples only."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_dir, synth_dir, tmp_path / "run", student="qwen3-student", teacher="qwen3-teacher",
                      family="text", overrides=["rollout.teacher_share=1", "rollout.n=2", "train.steps=1",
                                                "rollout.max_new_tokens=6"])
    trainer = Trainer(cfg)
    trainer.sampling = replace(trainer.sampling, greedy=True)
    seen = {}
    merge = trainer.with_teacher_samples
    monkeypatch.setattr(trainer, "with_teacher_samples", lambda ro, samples: seen.setdefault(
        "ro", merge(ro, samples)) and seen.setdefault("samples", samples) and seen["ro"])
    trainer.train()
    ro = seen["ro"]
    assert ro.from_teacher == [False, True] * (len(ro.responses) // 2)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen3-teacher").eval()
    (scorer,) = trainer.teachers.values()
    for k, sample in enumerate(seen["samples"]):
        ids = torch.tensor([scorer.encode(sample).prompt_ids])
        with torch.no_grad():
            out = teacher.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                   suppress_tokens=trainer.student_proc.suppressed_token_ids or None,
                                   eos_token_id=trainer.student_proc.eos_token_ids, pad_token_id=0)
        plain = out[0, ids.shape[1]:].tolist()
        eos = next((j + 1 for j, t in enumerate(plain) if t in trainer.student_proc.eos_token_ids), len(plain))
        assert ro.responses[2 * k + 1] == plain[:eos]
    row = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert row["rollout/teacher_samples"] == len(ro.responses) // 2
    student_cut = sum(not f for f, t in zip(ro.finished, ro.from_teacher) if not t) / (len(ro.responses) // 2)
    assert row["response/truncated_frac"] == pytest.approx(student_cut)


@pytest.mark.parametrize("override, message", [
    (["rollout.teacher_share=2"], "leaves the student none"),
    (["rollout.teacher_share=1", "rollout.reuse_logprobs=true"], "reuse_logprobs=false"),
    (["rollout.teacher_share=1", "teacher.context.system=Be brief."], "without teacher.context")])
def test_teacher_share_refusals(tiny_dir, synth_dir, tmp_path, override, message):
    from uniopd_mm.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_config(tiny_dir, synth_dir, tmp_path, overrides=["rollout.n=2", *override])
