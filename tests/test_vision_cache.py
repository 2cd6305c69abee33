"""train.vision_cache: a frozen Qwen-VL vision tower runs once per image; the model's outputs are the uncached
ones (a direct transformers forward without the cache is the reference)."""

from __future__ import annotations

import warnings

import pytest
import torch


def _frozen(tiny_dir, family, trainable=False):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir / f"{family}-student").eval()
    for p in model.model.visual.parameters():
        p.requires_grad_(trainable)
    return model


def _batch(tiny_dir, synth_samples, options, family, rows):
    from dataclasses import asdict

    from processors import make_processor

    proc = make_processor(family, str(tiny_dir / f"{family}-student"), options=asdict(options))
    picked = [s for m in ("image", "video") for s in [x for x in synth_samples if x.modality == m][:2]]
    prompts = [proc.encode_prompt(s) for s in picked]
    a, b = proc.tokenizer("red blue", add_special_tokens=False)["input_ids"][:2]
    return proc.training_batch([prompts[i] for i in rows], [[a, b, a][: 1 + i % 3] for i in range(len(rows))])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_cached_features_give_the_uncached_forward(tiny_dir, synth_samples, tiny_processor_options, family):
    from processors import model_inputs
    from uniopd_mm.models import cache_frozen_vision

    rows = [0, 2, 0, 1, 3, 2]  # images 0 and 1, videos 2 and 3; 0 and 2 twice (a rollout group)
    batch = model_inputs(_batch(tiny_dir, synth_samples, tiny_processor_options, family, rows))
    reference = _frozen(tiny_dir, family)
    with torch.no_grad():
        expected = reference(**batch).logits
    model = _frozen(tiny_dir, family)
    tower_calls = []
    model.model.visual.register_forward_hook(lambda m, args, out: tower_calls.append(len(args[0])))
    cache = cache_frozen_vision(model, limit=8)
    assert cache is not None
    with torch.no_grad():
        first = model(**batch).logits
        second = model(**batch).logits
    assert (first - expected).abs().max() < 1e-5 and (second - expected).abs().max() < 1e-5
    # the first forward ran each distinct image and video once (one tower call per modality), the second none
    assert len(tower_calls) == 2 and (cache.misses, cache.hits) == (4, 8)
    assert len(cache.entries) == 4
    small = cache_frozen_vision(_frozen(tiny_dir, family), limit=1)
    assert small is not None


def test_the_cache_keeps_at_most_its_limit(tiny_dir, synth_samples, tiny_processor_options):
    from processors import model_inputs
    from uniopd_mm.models import cache_frozen_vision

    model = _frozen(tiny_dir, "qwen2_vl")
    cache = cache_frozen_vision(model, limit=1)
    for rows in ([0], [1], [0]):
        with torch.no_grad():
            model(**model_inputs(_batch(tiny_dir, synth_samples, tiny_processor_options, "qwen2_vl", rows)))
    assert len(cache.entries) == 1 and (cache.misses, cache.hits) == (3, 0)  # image 0 was evicted by image 1


def test_the_cache_is_refused_where_it_would_be_wrong(tiny_dir):
    from transformers import AutoModelForImageTextToText

    from uniopd_mm.models import cache_frozen_vision

    cases = [(_frozen(tiny_dir, "qwen2_vl", trainable=True), {}, "vision tower trains"),
             (_frozen(tiny_dir, "qwen2_vl"), {"partitioned": True}, "ZeRO-3"),
             (AutoModelForImageTextToText.from_pretrained(tiny_dir / "qwen3_vl-student"), {}, "model type 'qwen3_vl'")]
    for model, kwargs, why in cases:
        real = model.model.get_image_features
        with pytest.warns(UserWarning, match=why):
            assert cache_frozen_vision(model, limit=8, **kwargs) is None
        assert model.model.get_image_features == real
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache_frozen_vision(_frozen(tiny_dir, "qwen2_vl"), limit=0) is None  # off: nothing to say


def test_a_training_step_with_the_cache_equals_one_without(tiny_dir, synth_dir, tmp_path):
    """One Uni-OPD step on the tiny Qwen2-VL pair with the student's tower frozen: the same rollouts, teacher
    scores and loss with and without train.vision_cache (the student's and the teacher's towers cached)."""
    from conftest import tiny_config

    from uniopd_mm.trainer import Trainer

    out = {}
    for limit in (0, 64):
        torch.manual_seed(0)
        trainer = Trainer(tiny_config(tiny_dir, synth_dir, tmp_path / f"c{limit}",
                                      overrides=["train.vision_lr_scale=0", f"train.vision_cache={limit}",
                                                 "train.preflight=false"]))  # the counts below are the step's
        out[limit] = trainer.train_step()
    (teacher,) = trainer.teachers.values()
    # each image prompt's 2 rollouts: the student's tower ran once for the rollouts, pi_old and the update (hits:
    # the second rollout, then both rows twice), the teacher's once for its 2 rows
    student, teacher = trainer.engine.module.model.get_image_features.cache, teacher.model.model.get_image_features.cache
    assert student.misses > 0 and (student.hits, teacher.misses, teacher.hits) == (5 * student.misses,) + (student.misses,) * 2
    for key in ("response/tokens", "opd/reverse_kl", "train/loss", "train/grad_norm"):
        assert out[64][key] == pytest.approx(out[0][key], rel=1e-4, abs=1e-6), key
