"""What a real run meets, point by point (docs/real-conditions.md): each test sets up the condition and checks the
handling against a value from outside the code path (a hand count, a plain transformers forward, a separately
loaded model, lmms-eval's rule)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import tiny_config

from uniopd_mm.config import ConfigError, ModelConfig, load_config
from uniopd_mm.data import DataError, PromptCache, StepPrompts, parse_record
from uniopd_mm.models import load_model, load_processor
from uniopd_mm.rollout.base import RolloutOutput, SamplingParams


def text_record(i, text="red circle: how many red?"):
    return parse_record({"id": f"r{i}", "domain": "x", "answer": "1", "messages": [{"role": "user", "content": text}]},
                        "records.jsonl", i + 1)  # Sample.key: the file and line


# -- 3. ranks in step --------------------------------------------------------------------------------------------
class Sampler:
    def __init__(self):
        self.calls = 0

    def next(self, k):
        self.calls += 1
        return list(range(k))


def test_fewer_prompts_than_ranks_is_refused_before_any_collective():
    prompts = StepPrompts([text_record(i) for i in range(4)], Sampler(), lambda s: s, rejects=None, rank=0, world=3,
                          all_reduce=lambda t, op="sum": t)
    with pytest.raises(ValueError, match="cannot give each of 3 ranks one"):
        prompts.next(2)


class Draws:
    """Draw 1 gives records 0-3, draw 2 records 4-7, and so on."""

    def __init__(self):
        self.calls = 0

    def next(self, k):
        self.calls += 1
        return list(range(k * (self.calls - 1), k * self.calls))


def test_a_rank_left_without_prompts_makes_every_rank_draw_again():
    """Rank 1 of 2 keeps positions 1 and 3 of each draw; on the first draw both its records are rejected. The
    all-reduce (here: this rank's count, the minimum) says a rank has none, so every rank draws again."""
    from uniopd_mm.data import RejectLog

    samples = [text_record(i) for i in range(8)]
    seen = []

    def encode(s):
        if s.id in ("r1", "r3"):
            raise s.error(DataError, "prompt failed")
        return s.id

    prompts = StepPrompts(samples, Draws(), encode, RejectLog(None), rank=1, world=2,
                          all_reduce=lambda t, op="sum": seen.append((float(t), op)) or t)
    drawn, kept, positions, encoded = prompts.next(4)
    assert seen == [(0.0, "min"), (2.0, "min")] and prompts.redraws == 1
    assert drawn == [4, 5, 6, 7] and kept == [5, 7] and positions == [1, 3] and encoded == ["r5", "r7"]
    assert prompts.bad_keys == {"records.jsonl:2", "records.jsonl:4"}  # r1 and r3, by file and line


def test_a_rank_that_never_gets_a_prompt_stops_every_rank_together():
    from uniopd_mm.data import RejectLog

    prompts = StepPrompts([text_record(i) for i in range(4)], Sampler(), lambda s: s.id, RejectLog(None), rank=1,
                          world=2, all_reduce=lambda t, op="sum": t * 0)  # another rank always reports none
    with pytest.raises(RuntimeError, match="16 draws in a row left a rank with every prompt rejected"):
        prompts.next(4)
    assert prompts.redraws == StepPrompts.MAX_REDRAWS


def test_trainer_refuses_prompts_per_step_below_the_world_size(tiny_dir, synth_dir, tmp_path, monkeypatch):
    from uniopd_mm import trainer as trainer_module
    from uniopd_mm.training.torch_engine import TorchEngine

    monkeypatch.setattr(TorchEngine, "world_size", 3)
    with pytest.raises(ConfigError, match=r"train.prompts_per_step=2 is fewer than the 3 processes"):
        trainer_module.Trainer(tiny_config(tiny_dir, synth_dir, tmp_path, overrides=["train.prompts_per_step=2"]))


# -- 4. no dummy vision call while decoding ------------------------------------------------------------------------
def test_no_dummy_vision_call_in_a_decoding_step(tiny_dir, synth_samples, tiny_processor_options):
    """A text prompt to a VL model: the prefill forward runs the tower 0 of 2 times, so 2 dummy calls; each of the
    7 decoding steps continues the KV cache and gets none (the old hook topped every step up: 2 x 8 = 16)."""
    from uniopd_mm.rollout.hf import HFRollout
    from uniopd_mm.training.visual_balance import VisualBalance

    cfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl", processor=tiny_processor_options)
    model, proc = load_model(cfg), load_processor(cfg)
    balance = VisualBalance(model)
    text = next(s for s in synth_samples if s.modality == "text")
    image = next(s for s in synth_samples if s.modality == "image")
    rollout = HFRollout(model, proc)
    rollout.generate([proc.encode_prompt(text)], SamplingParams(n=1, max_new_tokens=8, temperature=1.0))
    assert balance.dummy_calls == 2
    rollout.generate([proc.encode_prompt(image)], SamplingParams(n=1, max_new_tokens=8, temperature=1.0))
    assert balance.dummy_calls == 3  # the image prompt's prefill ran the tower once: one dummy call for the videos


# -- 6. configurations that would do nothing ----------------------------------------------------------------------
BASE = {"student": {"path": "s", "family": "text"}, "teacher": {"path": "t", "family": "text"},
        "data": {"train_path": "train.jsonl"}}


@pytest.mark.parametrize("overrides, field", [
    (["algo.advantage=grpo", "algo.loss=forward_kl"], "algo.advantage"),
    (["algo.advantage=opd+outcome", "algo.loss=reverse_kl"], "algo.advantage"),
    (["algo.preset=uniopd_mm", "algo.loss=jsd"], "algo.margin.shift"),
    (["algo.preset=uniopd_text", "algo.loss=forward_kl"], "algo.margin.shift"),
    (["algo.loss=forward_kl", "teacher.backend=vllm"], "teacher.backend"),
    (["rollout.backend=vllm", "train.lora.enabled=true"], "train.lora.enabled"),
])
def test_inert_or_failing_configurations_are_refused_at_load(overrides, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}: "):
        load_config(None, overrides, base=BASE)


def test_the_distribution_losses_keep_their_valid_settings():
    cfg = load_config(None, ["algo.preset=opd", "algo.loss=jsd", "algo.balance.enabled=true", "algo.margin.mask=true"],
                      base=BASE)
    assert cfg.algo.loss == "jsd" and cfg.algo.margin.mask and cfg.algo.balance.enabled


# -- 7. caches bounded in bytes -----------------------------------------------------------------------------------
def test_prompt_cache_keeps_at_most_its_byte_budget():
    """Entries of 10, 20, 30 and 50 bytes under a 60-byte budget: after the fourth only the last one fits with the
    third (30 + 50 > 60, so only 50 stays); a 70-byte entry is used and never kept."""
    sizes = {"a": 10, "b": 20, "c": 30, "d": 50, "e": 70}
    cache = PromptCache(100, lambda s: "abcde"[int(s.id[1:])], max_bytes=60, size=lambda v: sizes[v])
    for i in range(3):
        cache(text_record(i))
    assert cache.nbytes == 60 and len(cache) == 3
    cache(text_record(3))
    assert cache.nbytes == 50 and len(cache) == 1
    cache(text_record(4))
    assert cache.nbytes == 50 and len(cache) == 1


def test_encoded_prompts_size_and_media_kept_only_for_vllm(tiny_dir, synth_samples, tiny_processor_options):
    from processors import prompt_nbytes

    cfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl", processor=tiny_processor_options)
    proc = load_processor(cfg)
    image = next(s for s in synth_samples if s.modality == "image")
    with_media = proc.encode_prompt(image)
    proc.keep_media = False
    without = proc.encode_prompt(image)
    pixels = with_media.features["pixel_values"]
    assert without.multi_modal_data == {} and with_media.multi_modal_data["image"]
    w, h = with_media.multi_modal_data["image"][0].size
    # by hand: token ids (8 bytes each), the float32 patches and the grid, plus the RGB image's bytes
    expected = 8 * len(without.prompt_ids) + pixels.numel() * 4 + 3 * 8
    assert prompt_nbytes(without) == expected and prompt_nbytes(with_media) == expected + w * h * 3


def test_cached_vision_features_own_their_memory(tiny_dir, synth_samples, tiny_processor_options):
    """Each cached image's features are a clone, not a view pinning the whole batch's output."""
    from uniopd_mm.models import cache_frozen_vision

    cfg = ModelConfig(path=str(tiny_dir / "qwen2_vl-student"), family="qwen2_vl", processor=tiny_processor_options)
    model, proc = load_model(cfg, frozen=True), load_processor(cfg)
    cache = cache_frozen_vision(model, 8, max_bytes=10**9)
    images = [s for s in synth_samples if s.modality == "image"][:2]
    batch = proc.rollout_batch([proc.encode_prompt(s) for s in images])
    model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    for features in cache.entries.values():
        assert features.untyped_storage().nbytes() == features.numel() * features.element_size()
    assert cache.nbytes == sum(f.numel() * f.element_size() for f in cache.entries.values())


# -- 8. shared prompts under gradient checkpointing ----------------------------------------------------------------
@pytest.mark.parametrize("student, family", [("qwen3-student", "text"), ("qwen2_vl-student", "qwen2_vl")])
def test_share_prompts_with_gradient_checkpointing(tiny_dir, synth_dir, tmp_path, monkeypatch, student, family):
    """A training step with both on: pi_old equals the plain full forward of the same weights (no sharing)."""
    from uniopd_mm.models import response_logprobs
    from uniopd_mm.trainer import Trainer

    teacher = student.replace("student", "teacher")
    trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path, student=student, teacher=teacher, family=family,
                                  overrides=["train.steps=1", "train.share_prompts=true",
                                             "train.gradient_checkpointing=true"]))
    assert trainer.engine.module.is_gradient_checkpointing
    original, seen = trainer.old_logprobs, {}

    def old_logprobs(rollouts, ro):
        out = original(rollouts, ro)
        batch = trainer.student_batch(rollouts.prompts, ro.responses, list(range(len(ro.responses))))
        with torch.no_grad():
            seen["full"] = response_logprobs(trainer.engine.module, batch, trainer.suppressed,
                                             trainer.cfg.rollout.temperature)["logprobs"] * batch["response_mask"]
        seen["shared"] = out[0]
        return out

    monkeypatch.setattr(trainer, "old_logprobs", old_logprobs)
    metrics = trainer.train()
    width = seen["full"].shape[1]
    assert torch.allclose(seen["shared"][:, :width], seen["full"], atol=1e-5)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


# -- 9 and 14. evaluation: fingerprinted resume, stripped responses ------------------------------------------------
def test_eval_into_another_models_out_regenerates(tiny_dir, tmp_path):
    from uniopd_mm.evalsuite.runner import EvalSettings, run_eval
    from uniopd_mm.synthetic import SyntheticSpec, generate

    data = tmp_path / "bench"
    generate(SyntheticSpec(n_train=2, n_test=4, domains=("text-arith",), levels=(0,)), data / "synthetic",
             progress=False)
    settings = EvalSettings(n=1, temperature=0.0, max_new_tokens=8, batch_size=4)

    def run(model, out):
        run_eval(str(tiny_dir / model), "qwen2_vl", ["synthetic"], data, out, settings, progress=False)
        return [json.loads(line) for line in (out / "synthetic" / "predictions.jsonl").read_text().splitlines()]

    shared, alone = tmp_path / "shared", tmp_path / "alone"
    student = run("qwen2_vl-student", shared)
    teacher = run("qwen2_vl-teacher", shared)  # the same --out: the student's rows must not be reused
    fresh = run("qwen2_vl-teacher", alone)
    assert [r["responses"] for r in teacher] == [r["responses"] for r in fresh]
    assert [r["responses"] for r in teacher] != [r["responses"] for r in student]
    assert {r["run"] for r in teacher} == {fresh[0]["run"]} != {student[0]["run"]}
    assert all(t == t.strip() for r in teacher for t in r["responses"])


def test_responses_are_stripped_before_scoring_as_lmms_eval_does(tiny_dir, tmp_path):
    """lmms-eval strips every generated answer (api/task.py: ``res.strip()``) before AI2D's exact letter match:
    "A\\n" scores 1 there; scored raw it would be 0."""
    from uniopd_mm.evalsuite.benchmarks import BENCHMARKS
    from uniopd_mm.evalsuite.runner import EvalSettings, run_benchmark

    proc = load_processor(ModelConfig(path=str(tiny_dir / "qwen3-student"), family="text"))
    sample = parse_record({"id": "q", "domain": "ai2d", "answer": "A", "meta": {"options": ["x", "y"]},
                           "messages": [{"role": "user", "content": "which?"}]})
    bench = dataclasses.replace(BENCHMARKS["ai2d"], load=lambda files, media: [sample], patterns=["*.none"])
    bench.load_samples = lambda data_dir, limit: [sample]

    class Echo:
        def generate(self, prompts, params):
            ids = proc.tokenizer("A\n", add_special_tokens=False)["input_ids"] + proc.eos_token_ids[:1]
            return RolloutOutput([ids] * len(prompts), [[]] * len(prompts), list(range(len(prompts))))

    assert bench.score("A\n", sample) == 0.0  # the raw text fails the exact match
    result = run_benchmark(bench, lambda n: Echo(), proc, tmp_path, tmp_path / "out", EvalSettings(n=1))
    assert result["score"] == 1.0


# -- 10. cross-tokenizer end of turn --------------------------------------------------------------------------------
def test_cross_tokenizer_teacher_scores_the_stop_as_its_own_end_of_turn(tiny_dir):
    """The student's response ends with its <|im_end|>; the teacher (another vocabulary) scores the text and then
    its own end-of-turn token: the stop's chunk log-prob is log p_T(<|im_end|> | prompt, text) of a plain forward."""
    from transformers import AutoModelForCausalLM

    from uniopd_mm.teacher.hf import HFTeacher

    student = load_processor(ModelConfig(path=str(tiny_dir / "qwen2-student"), family="text"))
    cfg = ModelConfig(path=str(tiny_dir / "qwen2-xtok"), family="text")
    proc = load_processor(cfg)
    teacher = HFTeacher(load_model(cfg, frozen=True), proc, student_tokenizer=student.tokenizer,
                        student_stop_ids=student.eos_token_ids)
    assert not teacher.shared_vocab
    sample = text_record(0)
    text = "red: circle, so 1"
    response = student.tokenizer(text, add_special_tokens=False)["input_ids"] + [student.end_of_turn_id]
    scores = teacher.score([sample], [response])
    assert not scores.failed[0]
    # a plain forward of the teacher on its own prompt + the text + its end of turn
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir / "qwen2-xtok")
    prompt = proc.encode_prompt(sample).prompt_ids
    body = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + body + [proc.end_of_turn_id]])
    with torch.no_grad():
        z = ref(input_ids=ids).logits[0, len(prompt) + len(body) - 1].float()
    z[proc.suppressed_token_ids] = float("-inf")  # never-sampled ids carry no mass (RECIPE 7)
    logp = z.log_softmax(-1)
    chunks = scores.chunks[0, : len(response)]
    assert chunks[-1] == chunks.max() and chunks[-2] < chunks[-1]  # the stop is a chunk of its own
    assert abs(float(scores.logprobs[0, len(response) - 1]) - float(logp[proc.end_of_turn_id])) < 1e-4


# -- 11. resume ------------------------------------------------------------------------------------------------------
def test_resume_refuses_another_world_size_and_unions_every_ranks_rejects(tmp_path):
    from uniopd_mm import checkpoint as ckpt

    class Engine:
        rank, world_size = 0, 2

        def barrier(self):
            pass

        def save(self, d):
            d.mkdir(parents=True, exist_ok=True)

        def load(self, d):
            pass

        def export_hf(self, d, p):
            pass

    engine = Engine()
    ckpt.save(engine, tmp_path, 3, {"step": 3, "world_size": 2}, 2, rank_state={"bad_keys": ["a"]})
    (ckpt.step_dir(tmp_path, 3) / "rank1.json").write_text(json.dumps({"bad_keys": ["b"]}))  # rank 1's own file
    last, state = ckpt.resume(engine, tmp_path)
    assert [r["bad_keys"] for r in state["ranks"]] == [["a"], ["b"]]
    engine.world_size = 3
    with pytest.raises(RuntimeError, match="written by 2 processes, this run has 3"):
        ckpt.resume(engine, tmp_path)


# -- 12. metrics with -inf teacher log-probs outside the mask -------------------------------------------------------
def test_reverse_kl_ignores_a_masked_minus_inf():
    from uniopd_mm.metrics import rollout_sums, step_metrics

    old = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    teacher = torch.tensor([[-1.5, float("-inf")], [-1.0, -2.0]])
    counted = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    ro = RolloutOutput([[1, 2], [3, 4]], [[float("nan")] * 2] * 2, [0, 0], [True, True])
    sums = rollout_sums(ro, old, teacher, torch.ones(2, 2), counted, torch.tensor([1.0, 1.0]), [True, False],
                        counted)
    # (-1 + 1.5) + (-0.5 + 1) + (-3 + 2) = 0.5 + 0.5 - 1 = 0 over 3 counted tokens
    assert step_metrics(sums, lambda t: t)["opd/reverse_kl"] == 0.0
