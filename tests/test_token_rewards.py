"""scripts/token_rewards.py on tiny models: a teacher identical to the student gives a reward of exactly 0 on
every token; with another teacher the shares cover every sampled token and no suppressed token is sampled."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import token_rewards  # noqa: E402


def test_token_rewards(tiny_dir, synth_dir):
    student = tiny_dir / "qwen2_vl-student"
    same = token_rewards.token_rewards(student, student, "qwen2_vl", synth_dir / "test.jsonl", n_prompts=3, samples=2,
                                       max_new_tokens=6)
    assert same["tokens"] > 0
    assert all(r == 0.0 for e in same["examples"] for r in e["ratios"])
    other = token_rewards.token_rewards(student, tiny_dir / "qwen2_vl-teacher", "qwen2_vl", synth_dir / "test.jsonl",
                                        n_prompts=3, samples=2, max_new_tokens=6)
    assert sum(r["count"] for r in other["all_rows"]) == other["tokens"]
    assert abs(sum(r["share"] for r in other["all_rows"]) - 1.0) < 1e-6
    assert any(r != 0.0 for e in other["examples"] for r in e["ratios"])
    specials = {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"}
    assert not specials & {r["token"] for r in other["all_rows"]}
