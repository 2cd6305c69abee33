"""The synthetic task: deterministic for a seed, and every answer right when recomputed from pixels."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from uniopd_mm.synthetic import COLORS, SyntheticSpec, check_answer, extract_final, generate


def _digest(directory) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.suffix != ".mp4"}


def _frames(path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def test_generation_is_deterministic(tmp_path):
    spec = SyntheticSpec(n_train=30, n_test=6, seed=3, levels=(1, 2))
    generate(spec, tmp_path / "a", progress=False)
    generate(spec, tmp_path / "b", progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for mp4 in sorted((tmp_path / "a" / "videos").glob("*.mp4")):
        assert np.array_equal(_frames(mp4), _frames(tmp_path / "b" / "videos" / mp4.name))
    generate(SyntheticSpec(n_train=30, n_test=6, seed=4, levels=(1, 2)), tmp_path / "c", progress=False)
    assert (tmp_path / "a" / "train.jsonl").read_text() != (tmp_path / "c" / "train.jsonl").read_text()


def _decode_scene(img: np.ndarray, grid: int) -> dict[tuple[int, int], tuple[str, str]]:
    """(row, col) -> (color, shape), read from the pixels alone."""
    cell = img.shape[0] // grid
    pad = max(2, cell // 7)
    scene = {}
    names, rgbs = list(COLORS), np.array(list(COLORS.values()), dtype=float)
    for r in range(grid):
        for c in range(grid):
            box = img[r * cell + pad: (r + 1) * cell - pad, c * cell + pad: (c + 1) * cell - pad].astype(float)
            ink = np.abs(box - 255).sum(-1) > 120
            fill = ink.mean()
            if fill < 0.2:
                continue
            color = names[int(np.argmin(((rgbs[None] - box[ink][:, None]) ** 2).sum(-1).mean(0)))]
            shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
            scene[(r + 1, c + 1)] = (color, shape)
    return scene


def _answer_from_pixels(rec, root) -> str:
    q = rec["messages"][0]["content"][-1]["text"]
    grid = rec["meta"]["scene"]["grid"]
    if rec["domain"] == "video-color":
        frames = _frames(root / rec["messages"][0]["content"][0]["video"])
        first, last = _decode_scene(frames[0], grid), _decode_scene(frames[-1], grid)
        shape = re.match(r"What color is the moving (\w+)\?", q)[1]
        moved = [v for k, v in first.items() if v[1] == shape and last.get(k) != v]
        assert len(moved) == 1
        return moved[0][0]
    if rec["domain"] == "motion":
        frames = _frames(root / rec["messages"][0]["content"][0]["video"])
        first, last = _decode_scene(frames[0], grid), _decode_scene(frames[-1], grid)
        color, shape = re.match(r"Which direction does the (\w+) (\w+) move\?", q).groups()
        (r0, c0), = [k for k, v in first.items() if v == (color, shape)]
        (r1, c1), = [k for k, v in last.items() if v == (color, shape)]
        assert sorted(v for k, v in first.items() if v != (color, shape)) == sorted(
            v for k, v in last.items() if v != (color, shape)), "only the named shape moves"
        return ("right" if c1 > c0 else "left") if r0 == r1 else ("down" if r1 > r0 else "up")
    scene = _decode_scene(np.asarray(Image.open(root / rec["messages"][0]["content"][0]["image"]).convert("RGB")), grid)
    if m := re.match(r"What color is the (\w+)\?", q):
        (color,) = [v[0] for v in scene.values() if v[1] == m[1]]  # exactly one shape of that kind
        return color
    if m := re.match(r"How many (\w+) and (\w+) shapes are there in total\?", q):
        return str(sum(v[0] in (m[1], m[2]) for v in scene.values()))
    if m := re.match(r"How many (\w+) shapes are there\?", q):
        return str(sum(v[0] == m[1] for v in scene.values()))
    if m := re.match(r"Is the (\w+) (\w+) left or right of the (\w+) (\w+)\?", q):
        (ca,), (cb,) = ([k[1] for k, v in scene.items() if v == (m[i], m[i + 1])] for i in (1, 3))
        return "left" if ca < cb else "right"
    raise AssertionError(f"unrecognised question {q!r}")


def test_answers_recomputed_from_pixels(synth_dir):
    records = [json.loads(line) for split in ("train", "test") for line in open(synth_dir / f"{split}.jsonl")]
    domains = set()
    for rec in records:
        domains.add(rec["domain"])
        sol = rec["meta"]["solution"]
        assert extract_final(sol) == rec["answer"].lower()
        assert check_answer(sol, rec["answer"]) is True
        if rec["domain"] == "text-arith":
            expr = re.match(r"What is ([\d +*]+)\?", rec["messages"][0]["content"][0]["text"])[1]
            assert str(eval(expr, {"__builtins__": {}})) == rec["answer"]  # digits, + and * only
            continue
        assert _answer_from_pixels(rec, synth_dir) == rec["answer"], rec["id"]
        # the text view names every object of the scene at its cell
        for obj in rec["meta"]["scene"]["objects"]:
            assert f"{obj['color']} {obj['shape']}" in rec["text_view"]
    assert domains == {"shapes-color", "shapes-count", "shapes-position", "shapes-arith", "motion", "video-color",
                       "text-arith"}


def test_splits_do_not_overlap(synth_dir):
    def keys(split):
        return {json.dumps([r["messages"][0]["content"][-1]["text"], r.get("text_view")])
                for r in map(json.loads, open(synth_dir / f"{split}.jsonl"))}

    assert not keys("train") & keys("test")


def test_check_answer_unknown_without_final():
    assert check_answer("red: 3, blue: 2", "5") is None
    assert check_answer("red: 3, blue: 2, so 6", "5") is False
    assert check_answer("red: 3, blue: 2, so 5", "5") is True


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        SyntheticSpec(domains=("nope",))
    with pytest.raises(ValueError, match="even"):
        SyntheticSpec(video_frames=3)


def test_position_cues_tint_each_cell(tmp_path):
    """With ``position_cues`` every empty cell of a 3x3 scene has its own pale background (hand-computed: red
    falls by 30 per column, green by 30 per row), shapes keep their colours, and the answers do not change."""
    spec = SyntheticSpec(n_train=6, n_test=2, domains=("shapes-color",), levels=(1,), position_cues=True)
    generate(spec, tmp_path, progress=False)
    rec = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    img = np.asarray(Image.open(tmp_path / rec["messages"][0]["content"][0]["image"]).convert("RGB"))
    occupied = {(o["row"], o["col"]): o["color"] for o in rec["meta"]["scene"]["objects"]}
    for row in (1, 2, 3):
        for col in (1, 2, 3):
            corner = tuple(int(v) for v in img[(row - 1) * 28 + 1, (col - 1) * 28 + 1])  # padding: never a shape
            assert corner == (255 - 30 * (col - 1), 255 - 30 * (row - 1), 255)
            centre = tuple(int(v) for v in img[(row - 1) * 28 + 14, (col - 1) * 28 + 14])
            if (row, col) in occupied:
                assert centre == COLORS[occupied[(row, col)]]
    strong = SyntheticSpec(n_train=6, n_test=2, domains=("shapes-color",), levels=(1,), position_cues=True,
                           position_cue_span=150)
    generate(strong, tmp_path / "strong", progress=False)
    img = np.asarray(Image.open(tmp_path / "strong" / rec["messages"][0]["content"][0]["image"]).convert("RGB"))
    assert tuple(int(v) for v in img[2 * 28 + 1, 1 * 28 + 1]) == (180, 105, 255)  # row 3, column 2: 75 per step
    with pytest.raises(ValueError, match="position_cue_span"):
        SyntheticSpec(position_cue_span=0)
    plain = SyntheticSpec(n_train=6, n_test=2, domains=("shapes-color",), levels=(1,))
    generate(plain, tmp_path / "plain", progress=False)
    assert (tmp_path / "plain" / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()


def test_motion_direction_solution_states_the_direction_of_the_same_videos(tmp_path):
    """``motion_solution="direction"`` changes only what the answer states ("blue triangle: up, so up"): the same
    seed draws the same videos and answers, and each answer still matches the pixels."""
    kw = dict(n_train=8, n_test=4, domains=("motion",), levels=(1,))
    generate(SyntheticSpec(**kw), tmp_path / "cells", progress=False)
    generate(SyntheticSpec(**kw, motion_solution="direction"), tmp_path / "direction", progress=False)
    for split in ("train", "test"):
        cells = [json.loads(line) for line in open(tmp_path / "cells" / f"{split}.jsonl")]
        direction = [json.loads(line) for line in open(tmp_path / "direction" / f"{split}.jsonl")]
        for a, b in zip(cells, direction, strict=True):
            assert a["messages"] == b["messages"] and a["answer"] == b["answer"]
            assert (tmp_path / "cells" / a["messages"][0]["content"][0]["video"]).read_bytes() == (
                tmp_path / "direction" / b["messages"][0]["content"][0]["video"]).read_bytes()
            name = re.match(r"Which direction does the (\w+ \w+) move\?", b["messages"][0]["content"][-1]["text"])[1]
            assert b["meta"]["solution"] == f"{name}: {b['answer']}, so {b['answer']}"
            assert " row " in a["meta"]["solution"] and " row " not in b["meta"]["solution"]
            assert _answer_from_pixels(b, tmp_path / "direction") == b["answer"]
    with pytest.raises(ValueError, match="motion_solution"):
        SyntheticSpec(motion_solution="arrows")
