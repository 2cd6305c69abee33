"""Configuration: every shipped YAML loads; bad values and unknown keys fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniopd_mm.config import Config, load_config
from uniopd_mm.config_base import ConfigError, describe, parse_overrides

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "scripts" / "configs").rglob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.student.path and (cfg.data.train_path or cfg.data.mixture)
    if not path.name.startswith("sft_"):
        assert cfg.teacher_registry and all(t.path for t in cfg.teacher_registry.values())


def _tiny(overrides):
    return load_config(Path(__file__).resolve().parents[1] / "scripts" / "configs" / "tiny_qwen2_vl.yaml", overrides)


def test_dotted_overrides_apply():
    cfg = _tiny(["student.processor.fps=1.5", "data.strict=true", "seed=7", "student.chat_template_kwargs={enable_thinking: false}"])
    assert cfg.student.processor.fps == 1.5 and cfg.data.strict is True and cfg.seed == 7
    assert cfg.student.chat_template_kwargs == {"enable_thinking": False}


@pytest.mark.parametrize("override, message", [
    (["student.processor.fps=abc"], "student.processor.fps: expected float"),
    (["student.processor.fps=-1"], "student.processor.fps: must lie in"),
    (["student.family=llava"], "student.family: must be one of"),
    (["student.colour=red"], "unknown key student.colour"),
    (["seed=1.5"], "seed: expected int"),
    (["data.strict=maybe"], "data.strict: expected true/false"),
    (["student.processor.image_min_pixels=100000", "student.processor.image_max_pixels=10"], "image_min_pixels: 100000 exceeds"),
    (["teacher.family=text", "teacher.view=pixels"], "view: a text model cannot read pixels"),
    (["oops"], "not of the form dotted.key=value"),
])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _tiny(override)


def test_missing_required_field():
    with pytest.raises(ConfigError, match="student: required field is missing"):
        load_config(None, ["teacher.path=x", "teacher.family=text", "data.train_path=x"])
    with pytest.raises(ConfigError, match="teacher.family: required field is missing"):
        load_config(None, ["student.path=x", "student.family=text", "teacher.path=y", "data.train_path=x"])


def test_teacher_registry_and_mixture_checks():
    base = Path(__file__).resolve().parents[1] / "scripts" / "configs"
    cfg = load_config(base / "tiny_multi_teacher.yaml")
    assert sorted(cfg.teacher_registry) == ["image", "text", "video"]
    assert [e.teacher for e in cfg.data.mixture] == ["image", "video", "text"]
    with pytest.raises(ConfigError, match="teacher 'nobody' of x.jsonl is not in teachers"):
        load_config(base / "tiny_multi_teacher.yaml", ["data.mixture=[{path: x.jsonl, teacher: nobody}]"])
    with pytest.raises(ConfigError, match="teacher and teachers are exclusive"):
        load_config(base / "tiny_multi_teacher.yaml", ["teacher.path=x", "teacher.family=text"])
    with pytest.raises(ConfigError, match="train_path and mixture are exclusive"):
        load_config(base / "tiny_multi_teacher.yaml", ["data.train_path=x.jsonl"])


def test_view_defaults_follow_family():
    cfg = _tiny(["teacher.family=text"])
    assert cfg.student.view == "pixels" and cfg.teacher.view == "text"


def test_every_field_documents_itself():
    rows = describe(Config)
    assert len(rows) > 20
    undocumented = [name for name, _, _, help_ in rows if not help_]
    assert not undocumented


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.b.d=[1, 2]", "e=inf"]) == {"a": {"b": {"c": 1, "d": [1, 2]}}, "e": "inf"}


def test_settings_a_backend_cannot_honour_are_refused():
    """RECIPE 7: every backend computes log-probs under softmax(z / T) before truncation, or refuses."""
    with pytest.raises(ConfigError, match=r"rollout\.reuse_logprobs: the vLLM backend"):
        _tiny(["rollout.backend=vllm", "rollout.reuse_logprobs=true"])
    _tiny(["rollout.backend=vllm"])  # pi_old recomputed: fine
    for backend in ("vllm", "served"):
        extra = ["teacher.url=http://127.0.0.1:1", "teacher.served_model_name=t"] if backend == "served" else []
        with pytest.raises(ConfigError, match=rf"teacher\.backend: a {backend} teacher reads prompt log-probs at "
                                              r"temperature 1, but rollout\.temperature=0\.7"):
            _tiny([f"teacher.backend={backend}", "rollout.temperature=0.7", *extra])
        _tiny([f"teacher.backend={backend}", *extra])  # temperature 1
    _tiny(["teacher.backend=hf", "rollout.temperature=0.7"])


def test_missing_local_checkpoints_and_data_say_what_to_build(tmp_path):
    """The tiny configs read artifacts/ that `make models data` builds; a missing folder says so (it used to reach
    the hub client as a malformed repository id)."""
    from uniopd_mm.data import load_jsonl
    from uniopd_mm.models import check_checkpoint

    with pytest.raises(FileNotFoundError, match=r"no checkpoint folder at artifacts/tiny/not-a-preset \(the tiny "
                                                r"configs read artifacts/ that `make models data` builds\)"):
        check_checkpoint("artifacts/tiny/not-a-preset")
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at ./gone"):
        check_checkpoint("./gone")
    check_checkpoint("Qwen/Qwen3-4B")  # may be a hub id: left to the loader
    check_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"data file not found: artifacts/never-built/train.jsonl \(the tiny"):
        load_jsonl("artifacts/never-built/train.jsonl")
