"""Bad data inside a training run: every kind of bad record gives its named error, is skipped, written
to the rejects file and counted in the metrics, and the run goes on; strict mode stops at the first;
an over-long prompt is skipped or truncated as configured; a file that goes bad after loading is
rejected when its prompt is built."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_config

from uniopd_mm import data as D
from uniopd_mm.metrics import read_metrics
from uniopd_mm.trainer import Trainer

LONG = " ".join(["which shape is it and what colour"] * 40)

BAD = [  # (record or raw line, error class)
    ({"id": "bad-image", "prompt": "What color?", "images": ["corrupt.png"], "answer": "red"}, "CorruptImage"),
    ({"id": "bad-video", "prompt": "What color?", "videos": ["truncated.mp4"], "answer": "red"}, "UndecodableVideo"),
    ({"id": "bad-missing", "prompt": "What color?", "images": ["nowhere.png"], "answer": "red"}, "MissingMedia"),
    ('{"id": "bad-json", "prompt": "What color?", "answer": "red"', "MalformedJSON"),
    ({"id": "bad-type", "prompt": ["What", "color?"], "answer": "red"}, "BadFieldType"),
    ({"id": "bad-answer", "prompt": "What color?", "answer": "   "}, "EmptyAnswer"),
    ({"prompt": "What color? (no id)", "answer": "red"}, "MissingField"),
]


@pytest.fixture()
def dirty_data(tmp_path, synth_dir):
    """A training file of 12 good records with every kind of bad one among them."""
    d = tmp_path / "dirty"
    d.mkdir()
    img = synth_dir / "images" / "train-000000.png"
    vid = next((synth_dir / "videos").glob("*.mp4"))
    (d / "corrupt.png").write_bytes(img.read_bytes()[:60])
    (d / "truncated.mp4").write_bytes(vid.read_bytes()[:300])
    shutil.copy(img, d / "later.png")
    good = [json.loads(line) for line in (synth_dir / "train.jsonl").read_text().splitlines()]
    good = [r for r in good if "video" not in json.dumps(r)][:10] + [r for r in good if "video" in json.dumps(r)][:2]
    extra = [
        {"id": "long-text", "prompt": LONG, "answer": "red", "domain": "shapes-color"},
        {"id": "long-image", "prompt": LONG, "images": [str(img)], "answer": "red", "domain": "shapes-color"},
        {"id": "goes-bad", "prompt": "What color?", "images": ["later.png"], "answer": "red", "domain": "shapes-color"},
    ]
    lines = [json.dumps(r) for r in good[:4]]
    lines += [b if isinstance(b, str) else json.dumps(b) for b, _ in BAD]
    lines += [json.dumps(r) for r in good[4:] + extra]
    (d / "train.jsonl").write_text("\n".join(lines) + "\n")
    for sub in ("images", "videos"):
        (d / sub).symlink_to(synth_dir / sub)  # the records' media paths are relative
    return d


def _config(tiny_dir, data, out, *extra):
    return tiny_config(tiny_dir, data, out, overrides=[
        "train.steps=1", "train.prompts_per_step=15", "train.micro_batch_size=8", "rollout.n=1",
        "rollout.max_new_tokens=4", "student.processor.max_prompt_tokens=64", *extra])


@pytest.mark.parametrize("mode", ["skip", "truncate"])
def test_bad_records_are_named_skipped_written_and_counted(tiny_dir, dirty_data, tmp_path, mode):
    out = tmp_path / f"run-{mode}"
    trainer = Trainer(_config(tiny_dir, dirty_data, out, f"student.processor.overlong_prompt={mode}"))
    assert len(trainer.samples) == 15  # 12 good + 2 long + the file that goes bad later
    (dirty_data / "later.png").write_bytes(b"not a png any more")
    trainer.train()

    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    by_error = {}
    for r in rejects:
        by_error.setdefault(r["error"], []).append(r)
    expected = {cls: 1 for _, cls in BAD}
    expected["CorruptImage"] += 1  # later.png, rejected when its prompt was built
    expected["PromptTooLong"] = 2 if mode == "skip" else 1  # truncate: only the image prompt is refused
    assert {k: len(v) for k, v in by_error.items()} == expected
    for r in rejects:  # each names its file and line, and keeps the raw record where it had one
        assert r["path"].endswith("train.jsonl") and r["line"] > 0 and r["message"].startswith(r["error"])
    assert any("goes-bad" == r["id"] for r in by_error["CorruptImage"])
    long_image = next(r for r in by_error["PromptTooLong"] if r["id"] == "long-image")
    assert "max_prompt_tokens=64" in long_image["message"]

    row = read_metrics(out / "metrics.jsonl")[-1]
    assert row["step"] == 1 and row["train/grad_norm"] is not None  # the run went on
    assert row["data/rejected"] == len(rejects)
    assert {k[len("data/rejected_"):]: v for k, v in row.items() if k.startswith("data/rejected_")} == expected
    trained = set(trainer.seen_ids[0]) - {r["id"] for r in rejects}
    assert ("long-text" in trained) == (mode == "truncate")
    assert row["data/truncated_prompts"] == (1.0 if mode == "truncate" else 0.0)
    if mode == "truncate":
        long_text = next(s for s in trainer.samples if s.id == "long-text")
        ids = trainer.student_proc.encode_prompt(long_text).prompt_ids
        assert len(ids) == 64  # the last 64 tokens: the end of the question and the assistant turn
        assert trainer.student_proc.tokenizer.decode(ids).endswith("assistant\n")


def test_strict_mode_stops_at_the_first_bad_record(tiny_dir, dirty_data, tmp_path):
    with pytest.raises(D.CorruptImage, match=r"train.jsonl:5 \(record 'bad-image'\)"):
        Trainer(_config(tiny_dir, dirty_data, tmp_path / "strict", "data.strict=true"))


def test_strict_mode_stops_at_a_prompt_that_goes_bad(tiny_dir, dirty_data, tmp_path):
    clean = dirty_data / "clean.jsonl"
    rows = [line for line in (dirty_data / "train.jsonl").read_text().splitlines() 
            if '"id": "train-' in line or '"id": "long-' in line or '"id": "goes-bad"' in line]
    clean.write_text("\n".join(rows) + "\n")
    trainer = Trainer(_config(tiny_dir, dirty_data, tmp_path / "strict2", "data.strict=true",
                              f"data.train_path={clean}"))
    with pytest.raises(D.PromptTooLong, match=r"record 'long-"):
        trainer.train()


def test_bad_test_records_are_written_and_scored_wrong(tiny_dir, dirty_data, tmp_path):
    out = tmp_path / "eval"
    trainer = Trainer(_config(tiny_dir, dirty_data, out, "train.eval_every=1",
                              f"data.test_path={dirty_data / 'train.jsonl'}"))
    (dirty_data / "later.png").write_bytes(b"not a png any more")
    trainer.train()
    rejects = [json.loads(line) for line in (out / "rejects_test.jsonl").read_text().splitlines()]
    # the 7 bad at load, then at the first evaluation the 2 long prompts and the image that went bad; once each
    assert sorted(r["error"] for r in rejects) == sorted([cls for _, cls in BAD] + ["PromptTooLong"] * 2 + ["CorruptImage"])
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and [r["eval/rejected"] for r in rows] == [3.0, 3.0]


def test_sft_records_bad_test_records_once(tiny_dir, dirty_data, tmp_path):
    from uniopd_mm.sft import run_sft

    out = tmp_path / "sft_eval"
    cfg = _config(tiny_dir, dirty_data, out, "train.eval_every=1", "train.steps=2",
                  f"data.test_path={dirty_data / 'train.jsonl'}")
    (dirty_data / "later.png").write_bytes(b"not a png any more")  # bad before loading: a load-time reject here
    run_sft(cfg)
    rejects = [json.loads(line) for line in (out / "rejects_test.jsonl").read_text().splitlines()]
    # the 7 bad and the corrupted image at load, then at the first evaluation the 2 long prompts; once each
    # although two evaluations ran (before, SFT scored them wrong without writing them anywhere)
    assert sorted(r["error"] for r in rejects) == sorted([cls for _, cls in BAD] + ["PromptTooLong"] * 2 + ["CorruptImage"])
    assert sum(r["error"] == "PromptTooLong" for r in rejects) == 2
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["eval/rejected"] for r in rows if "eval/rejected" in r] == [2.0, 2.0]
