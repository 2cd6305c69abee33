"""Three processes, uneven shards: `deepspeed --num_gpus 3 scripts/train_mm.py` under ZeRO-3 on the CPU, 7 prompts a
step (3 + 2 + 2), one record rejected on one rank only (its prompt is over max_prompt_tokens), 2 test records for 3
ranks (one eval shard empty). The old rollout ran ZeRO-3's hooks in every decoding step, so ranks with different
numbers of generate calls died in step 1 ("collective mismatch" under gloo; a hang under NCCL). The run must finish
and equal one process: the same prompts drawn each step, the same rejected record, the same greedy evaluation of
the starting weights. The teacher samples one of each prompt's two responses (``rollout.teacher_share``): its
generate runs on each rank's own shard (2 or 3 prompts), never in step with the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import yaml
from conftest import free_port, tiny_config

from uniopd_mm.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def absolute(record: dict, base: Path) -> dict:
    """The record with its media paths made absolute (they are relative to the file it came from)."""
    for m in record["messages"]:
        for p in m["content"] if isinstance(m["content"], list) else []:
            for key in ("image", "video"):
                if key in p and not str(p[key]).startswith("/"):
                    p[key] = str(base / p[key])
    return record


def write_data(synth_dir: Path, out: Path) -> Path:
    """13 ordinary training records and one whose prompt is far over the limit (14 = one epoch of 2 steps x 7),
    and 2 test records."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [absolute(json.loads(line), synth_dir) for line in (synth_dir / "train.jsonl").read_text().splitlines()][:13]
    rows.insert(5, dict(rows[0], id="too-long", messages=[{"role": "user", "content": "red circle " * 300}]))
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tests = [absolute(json.loads(line), synth_dir) for line in (synth_dir / "test.jsonl").read_text().splitlines()][:2]
    (out / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests))
    return out


def run(tiny_dir, data, out, tmp_path, procs: int) -> subprocess.CompletedProcess:
    cfg = asdict(tiny_config(tiny_dir, data, out, overrides=[
        "train.steps=2", "train.prompts_per_step=7", "train.micro_batch_size=4", "train.eval_every=1",
        "train.save_every=0", "train.collective_timeout_s=60", "rollout.n=2", "rollout.batch_size=3",
        "rollout.teacher_share=1", "rollout.reuse_logprobs=false",
        "student.processor.max_prompt_tokens=256", "teacher.processor.max_prompt_tokens=256"]))
    cfg["train"].update(engine="deepspeed", zero_stage=3)
    path = tmp_path / f"cfg{procs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(procs), "--master_port",
           str(free_port()), str(ROOT / "scripts" / "train_mm.py"), "--config", str(path)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420, start_new_session=True)


def rejected(out: Path) -> list[str]:
    return sorted(json.loads(line)["id"] for f in out.glob("rejects*.jsonl") for line in f.read_text().splitlines())


def test_three_ranks_with_uneven_shards_finish_and_equal_one_process(tiny_dir, synth_dir, tmp_path):
    data = write_data(synth_dir, tmp_path / "data")
    results = {}
    for procs in (3, 1):
        out = tmp_path / f"p{procs}"
        proc = run(tiny_dir, data, out, tmp_path, procs)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        state = json.loads((out / "checkpoints" / "step_000002" / "trainer_state.json").read_text())
        results[procs] = (state, read_metrics(out / "metrics.jsonl"), rejected(out))
    (state3, rows3, rej3), (state1, rows1, rej1) = results[3], results[1]
    assert state3["world_size"] == 3 and state1["world_size"] == 1
    assert state3["seen_ids"] == state1["seen_ids"] and "too-long" in sum(state1["seen_ids"], [])
    assert rej3 == rej1 == ["too-long"]  # rejected once, by the rank it fell to
    assert [r["step"] for r in rows3] == [0, 1, 2] == [r["step"] for r in rows1]
    # greedy, the same starting weights: the same answers, whichever rank had which record (one had none)
    assert rows3[0]["eval/accuracy"] == rows1[0]["eval/accuracy"] and rows3[0]["eval/rejected"] == 0
    assert all(r["train/grad_norm"] > 0 for r in rows3[1:])
    # one teacher sample per prompt trained on, summed over the ranks: 7 a step, 6 in the step whose draw held the
    # rejected record (it is not replaced)
    trained = [7 - ("too-long" in ids) for ids in state1["seen_ids"]]
    assert sorted(trained) == [6, 7]
    assert [r["rollout/teacher_samples"] for r in rows3[1:]] == trained == [r["rollout/teacher_samples"] for r in rows1[1:]]
