"""Bad input: each case gives its named error with file, line and id; lenient mode skips and logs it."""

from __future__ import annotations

import json
import shutil

import pytest

from uniopd_mm import data as D


@pytest.fixture()
def bad_dir(tmp_path, synth_dir):
    img = synth_dir / "images" / "train-000000.png"
    vid = next((synth_dir / "videos").glob("*.mp4"))
    shutil.copy(img, tmp_path / "ok.png")
    shutil.copy(vid, tmp_path / "ok.mp4")
    (tmp_path / "corrupt.png").write_bytes(img.read_bytes()[:60])
    (tmp_path / "truncated.mp4").write_bytes(vid.read_bytes()[:300])
    return tmp_path


CASES = [
    # (json line or raw text, expected error class, substring of the message)
    ('{"id": "a1", "prompt": "hi", "images": ["corrupt.png"], "answer": "x"}', D.CorruptImage, "corrupt.png"),
    ('{"id": "a2", "prompt": "hi", "videos": ["truncated.mp4"], "answer": "x"}', D.UndecodableVideo, "truncated.mp4"),
    ('{"id": "a3", "prompt": "hi", "images": ["missing.png"], "answer": "x"}', D.MissingMedia, "missing.png"),
    ('{"id": "a4", "prompt": "hi", "answer": "x"', D.MalformedJSON, "invalid JSON"),
    ('{"prompt": "hi", "answer": "x"}', D.MissingField, "'id'"),
    ('{"id": "a6", "answer": "x"}', D.MissingField, "'messages' or 'prompt'"),
    ('{"id": "a7", "prompt": ["not", "a", "string"]}', D.BadFieldType, "'prompt'"),
    ('{"id": "a8", "prompt": "hi", "answer": "  "}', D.EmptyAnswer, "empty"),
    ('{"id": "a9", "messages": [{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]}]}', D.BadFieldType, "audio"),
    ('[1, 2, 3]', D.BadFieldType, "JSON object"),
]


@pytest.mark.parametrize("line, cls, text", CASES, ids=[c[1].__name__ + str(i) for i, c in enumerate(CASES)])
def test_each_bad_record_is_named_and_rejected(bad_dir, line, cls, text):
    path = bad_dir / "data.jsonl"
    good = '{"id": "ok", "prompt": "look", "images": ["ok.png"], "videos": ["ok.mp4"], "answer": "3", "domain": "d"}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(cls) as info:
        D.load_jsonl(path, strict=True)
    msg = str(info.value)
    assert f"{path}:2" in msg and text in msg
    rejects = D.RejectLog(bad_dir / "rejects.jsonl")
    samples = D.load_jsonl(path, strict=False, rejects=rejects)
    assert [s.id for s in samples] == ["ok"]
    assert rejects.counts == {cls.__name__: 1}
    entry = json.loads((bad_dir / "rejects.jsonl").read_text().splitlines()[0])
    assert entry["error"] == cls.__name__ and entry["line"] == 2 and entry["raw"] == line
    assert rejects.metrics() == {"data/rejected": 1.0, f"data/rejected_{cls.__name__}": 1.0}


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n')
    rejects = D.RejectLog(None)
    assert [s.id for s in D.load_jsonl(path, rejects=rejects)] == ["1"]
    assert rejects.counts == {"BadFieldType": 1}


def test_short_form_and_messages_normalise_alike(bad_dir):
    a = D.parse_record({"id": "x", "prompt": "q?", "images": ["ok.png"]}, bad_dir / "f.jsonl", 1)
    b = D.parse_record({"id": "x", "messages": [{"role": "user", "content": [
        {"type": "image", "image": "ok.png"}, {"type": "text", "text": "q?"}]}]}, bad_dir / "f.jsonl", 1)
    assert a.messages == b.messages and a.images == [str(bad_dir / "ok.png")]
    assert a.modality == "image" and a.domain == "default" and a.answer is None


def test_processor_reports_corrupt_media_at_encode_time(bad_dir, tiny_dir, tiny_processor_options):
    """A file that goes bad after loading still gives a named error from the processor."""
    from processors import make_processor

    shutil.copy(bad_dir / "ok.png", bad_dir / "later.png")
    sample = D.parse_record({"id": "z", "prompt": "q", "images": ["later.png"]}, bad_dir / "f.jsonl", 7)
    (bad_dir / "later.png").write_bytes(b"not a png")
    proc = make_processor("qwen2_vl", str(tiny_dir / "qwen2_vl-student"), options=tiny_processor_options)
    with pytest.raises(D.CorruptImage, match=r"f.jsonl:7 \(record 'z'\)"):
        proc.encode_prompt(sample)


def test_prompt_too_long(tiny_dir, synth_samples):
    from processors import make_processor
    from uniopd_mm.config import ProcessorConfig

    proc = make_processor("text", str(tiny_dir / "qwen2-student"), options=ProcessorConfig(max_prompt_tokens=3))
    with pytest.raises(D.PromptTooLong, match="max_prompt_tokens=3"):
        proc.encode_prompt(next(s for s in synth_samples if s.modality == "text"))
