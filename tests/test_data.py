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


def test_prompt_cache_keeps_the_most_recent_entries():
    calls = []

    def encode(sample):
        calls.append(sample.key)
        return f"enc:{sample.key}"

    s = {k: D.Sample(id="same-id", messages=[], source=f"{k}.jsonl:1") for k in "abc"}
    cache = D.PromptCache(2, encode)
    assert [cache(s["a"]), cache(s["b"]), cache(s["a"])] == ["enc:a.jsonl:1", "enc:b.jsonl:1", "enc:a.jsonl:1"]
    assert calls == ["a.jsonl:1", "b.jsonl:1"]  # a hit encodes nothing; equal ids in two files are two entries
    cache(s["c"])  # a full cache drops the least recently used entry (b: a was used after it)
    assert list(cache.entries) == ["a.jsonl:1", "c.jsonl:1"] and len(cache) == 2
    cache(s["b"])
    assert calls[-1] == "b.jsonl:1" and len(cache) == 2
    none = D.PromptCache(0, encode)
    none(s["a"]), none(s["a"])
    assert len(none) == 0 and calls[-2:] == ["a.jsonl:1", "a.jsonl:1"]


def _mixture(tiny_dir, synth_dir, tmp_path, prompt_cache):
    """Two files with the same ids (each file numbers its records from 0), one teacher each."""
    from conftest import tiny_config

    lines = [json.loads(line) for line in (synth_dir / "train_image.jsonl").read_text().splitlines()]
    for name, part in (("a", lines[:6]), ("b", lines[6:12])):
        with open(tmp_path / f"{name}.jsonl", "w") as fh:
            for i, rec in enumerate(part):
                for m in rec.get("messages", []):
                    for p in m["content"] if isinstance(m["content"], list) else []:
                        if p.get("image"):
                            p["image"] = str((synth_dir / p["image"]).resolve())
                if rec.get("image"):
                    rec["image"] = str((synth_dir / rec["image"]).resolve())
                fh.write(json.dumps({**rec, "id": f"r{i}"}) + "\n")
    mixture = (f"data.mixture=[{{path: {tmp_path / 'a.jsonl'}, teacher: default}}, "
               f"{{path: {tmp_path / 'b.jsonl'}, teacher: default}}]")
    return tiny_config(tiny_dir, synth_dir, tmp_path / "run",
                       overrides=["data.train_path=null", mixture, f"train.prompt_cache={prompt_cache}",
                                  "train.prompts_per_step=6"])


def test_a_bad_record_drops_only_itself_in_a_mixture(tiny_dir, synth_dir, tmp_path):
    """Ids repeat across the files of a mixture: a record rejected in a.jsonl (r1) must not take b.jsonl's r1."""
    from uniopd_mm.trainer import Trainer

    t = Trainer(_mixture(tiny_dir, synth_dir, tmp_path, 4096))
    assert sorted(s.id for s in t.samples) == sorted([f"r{i}" for i in range(6)] * 2)
    bad = next(s for s in t.samples if s.id == "r1" and s.source.startswith(str(tmp_path / "a.jsonl")))
    encode = t.prompts.encode

    def fails_on_a_r1(sample):
        if sample.key == bad.key:
            raise sample.error(D.DataError, "planted bad prompt")
        return encode(sample)

    t.prompts.encode = fails_on_a_r1
    drawn = []
    for _ in range(8):  # 48 draws over 12 records: both r1 records are drawn many times
        samples, _, _ = t.next_prompts()
        drawn += [s.key for s in samples]
    assert bad.key not in drawn
    good = next(s for s in t.samples if s.id == "r1" and s.key != bad.key)
    assert drawn.count(good.key) >= 1
    assert t.prompts.bad_keys == {bad.key} and t.rejects.total == 1


def test_teacher_and_student_prompt_caches_are_bounded(tiny_dir, synth_dir, tmp_path):
    from uniopd_mm.trainer import Trainer

    t = Trainer(_mixture(tiny_dir, synth_dir, tmp_path, 3))
    t.train_step()
    t.train_step()  # 12 prompts drawn from 12 records
    teacher = t.teachers["default"]
    assert len(t.prompts.encode) == 3 and len(teacher.encode) == 3


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_encode_time_errors_name_the_file_that_failed(bad_dir, tiny_dir, tiny_processor_options, family):
    """Files that go bad after loading: a deleted image in a record with a video is MissingMedia (not
    CorruptImage, not UndecodableVideo), a deleted video likewise, a corrupt image in a record with a good
    video is CorruptImage; each names its file."""
    from processors import make_processor

    proc = make_processor(family, str(tiny_dir / f"{family}-student"), options=tiny_processor_options)

    def record(images, videos):
        for name in images + videos:
            shutil.copy(bad_dir / ("ok.png" if name.endswith(".png") else "ok.mp4"), bad_dir / name)
        return D.parse_record({"id": "r", "prompt": "q", "images": images, "videos": videos}, bad_dir / "f.jsonl", 3)

    s = record(["gone.png"], ["kept.mp4"])
    (bad_dir / "gone.png").unlink()
    with pytest.raises(D.MissingMedia, match="no such file: .*gone.png"):
        proc.encode_prompt(s)
    s = record(["kept.png"], ["gone.mp4"])
    (bad_dir / "gone.mp4").unlink()
    with pytest.raises(D.MissingMedia, match="gone.mp4"):
        proc.encode_prompt(s)
    s = record(["bad.png"], ["kept2.mp4"])
    (bad_dir / "bad.png").write_bytes(b"not a png")
    with pytest.raises(D.CorruptImage, match="bad.png"):
        proc.encode_prompt(s)


def test_a_one_frame_video_is_named_for_its_frame_count(tmp_path):
    from PIL import Image

    from uniopd_mm.synthetic import write_video

    write_video([Image.new("RGB", (56, 56), (200, 10, 10))], tmp_path / "one.mp4", fps=2)
    rec = '{"id": "v1", "prompt": "q", "videos": ["one.mp4"], "answer": "x"}'
    (tmp_path / "d.jsonl").write_text(rec + "\n")
    log = D.RejectLog(tmp_path / "rejects.jsonl")
    assert D.load_jsonl(tmp_path / "d.jsonl", strict=False, rejects=log) == []
    assert log.counts == {"UndecodableVideo": 1}
    reason = json.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[0])
    assert "has 1 frame(s); the Qwen-VL processors need at least 2" in json.dumps(reason)


def test_two_videos_at_different_rates_in_one_prompt(tmp_path, tiny_dir, tiny_processor_options):
    """Qwen2-VL and Qwen2.5-VL took one fps for all of a prompt's videos and raised a plain ValueError (which
    stopped training and evaluation); each video now brings its own metadata. At fps 2, a 1 s clip of 4 frames
    at 4 fps keeps its 4 frames (qwen-vl-utils' minimum): 4 fps sampled, 2 / 4 = 0.5 s per temporal patch for
    Qwen2.5-VL; a 4 s clip of 8 frames at 2 fps keeps 8: 2 fps, 1.0 s."""
    from PIL import Image

    from processors import make_processor
    from uniopd_mm.synthetic import write_video

    frames = [Image.new("RGB", (56, 56), (10 * t, 80, 160)) for t in range(8)]
    write_video(frames[:4], tmp_path / "fast.mp4", fps=4)
    write_video(frames, tmp_path / "slow.mp4", fps=2)
    s = D.parse_record({"id": "two", "prompt": "Which moves faster?", "videos": ["fast.mp4", "slow.mp4"]},
                       tmp_path / "d.jsonl", 1)
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        p = make_processor(family, str(tiny_dir / f"{family}-student"), options=tiny_processor_options).encode_prompt(s)
        assert p.features["video_grid_thw"][:, 0].tolist() == [2, 4], family  # 4 and 8 frames, 2 per patch
        if family == "qwen2_5_vl":
            assert p.features["second_per_grid_ts"].tolist() == pytest.approx([0.5, 1.0])


def test_a_truncated_image_is_caught_even_when_pil_is_told_to_load_them(bad_dir, monkeypatch):
    """Some libraries set PIL's process-wide LOAD_TRUNCATED_IMAGES on import (lmms-eval does); the media check
    must still reject a truncated image, and leave the flag as it found it."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    log = D.RejectLog(None)
    rec = '{"id": "t", "prompt": "hi", "images": ["corrupt.png"], "answer": "x"}'
    (bad_dir / "one.jsonl").write_text(rec + "\n")
    assert D.load_jsonl(bad_dir / "one.jsonl", strict=False, rejects=log) == []
    assert log.counts == {"CorruptImage": 1} and ImageFile.LOAD_TRUNCATED_IMAGES is True
