"""A learnable synthetic multimodal task with exactly checkable, multi-step answers.

Scenes are coloured shapes on a grid. Images ask about colour, count, position and arithmetic
on counts; videos show one shape moving while the others stay; text-only records are written-out
arithmetic. Every answer states its intermediate facts, then ``so <answer>``
(``red: 3, blue: 2, so 5``), so a teacher's token-level guidance has more than one token to teach.

Every visual record carries a ``text_view``: an exact description of the scene (frame by frame for
videos) from which a text-only model can answer the same question.

Difficulty grows with the grid size, the number of objects and, for text, the number of operands.
All randomness comes from one seeded ``numpy.random.Generator`` per split, so a split is a pure
function of its seed and sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
}
SHAPES = ("square", "circle", "triangle")
BACKGROUND = (255, 255, 255)

IMAGE_DOMAINS = ("shapes-color", "shapes-count", "shapes-position", "shapes-arith")
VIDEO_DOMAINS = ("motion", "video-color")
TEXT_DOMAINS = ("text-arith",)
ALL_DOMAINS = IMAGE_DOMAINS + VIDEO_DOMAINS + TEXT_DOMAINS

# difficulty level -> (grid size, min objects, max objects); text: number of operands
LEVELS = {0: (3, 1, 1), 1: (3, 2, 3), 2: (3, 3, 5), 3: (4, 4, 7)}
TEXT_OPERANDS = {0: 2, 1: 2, 2: 3, 3: 4}


@dataclass
class SyntheticSpec:
    n_train: int = 2000
    n_test: int = 200
    seed: int = 0
    domains: tuple[str, ...] = ALL_DOMAINS
    levels: tuple[int, ...] = (1,)
    cell: int = 28
    video_frames: int = 4
    video_fps: float = 2.0
    disjoint: bool = True  # test records never repeat a train question+scene
    # tint each grid cell's background by its row and column, so a small vision tower without absolute
    # position embeddings can see where a shape is (Qwen-VL vision towers encode position only relatively)
    position_cues: bool = False
    # how far the tint's red (green) falls from the first to the last column (row); the default 60 is faint
    position_cue_span: int = 60
    # what a motion answer states before "so <direction>": "cells" (start and end row and column; needs a model
    # that reads where a shape is) or "direction" ("blue triangle: up, so up"; the motion itself, which a frozen
    # random vision tower carries in each shape's token, docs/results.md)
    motion_solution: str = "cells"

    def __post_init__(self):
        bad = [d for d in self.domains if d not in ALL_DOMAINS]
        if bad:
            raise ValueError(f"unknown synthetic domain(s) {bad}; known: {list(ALL_DOMAINS)}")
        bad = [lv for lv in self.levels if lv not in LEVELS]
        if bad:
            raise ValueError(f"unknown difficulty level(s) {bad}; known: {sorted(LEVELS)}")
        if self.video_frames < 2 or self.video_frames % 2:
            raise ValueError("video_frames must be an even number >= 2 (Qwen-VL temporal patches are 2 frames)")
        if "shapes-position" in self.domains and 0 in self.levels:
            raise ValueError("shapes-position needs two shapes: use levels >= 1 with it")
        if self.cell < 8:
            raise ValueError("cell must be >= 8 pixels")
        if self.motion_solution not in ("cells", "direction"):
            raise ValueError(f"motion_solution must be 'cells' or 'direction', not {self.motion_solution!r}")
        if not 0 < self.position_cue_span <= 200:
            raise ValueError("position_cue_span must be in (0, 200] (a tint channel never falls below 55)")


@dataclass
class Obj:
    shape: str
    color: str
    row: int  # 1-based
    col: int  # 1-based

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class Scene:
    grid: int
    objects: list[Obj] = field(default_factory=list)

    def describe(self) -> str:
        objs = sorted(self.objects, key=lambda o: (o.row, o.col))
        parts = [f"{o.name} at row {o.row} column {o.col}" for o in objs]
        return f"{self.grid}x{self.grid} grid: " + "; ".join(parts) + "."


def _sample_scene(rng: np.random.Generator, level: int, unique_shape_color: bool = True) -> Scene:
    grid, lo, hi = LEVELS[level]
    n = int(rng.integers(lo, hi + 1))
    cells = rng.choice(grid * grid, size=n, replace=False)
    objs, used = [], set()
    for c in cells:
        while True:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            if not unique_shape_color or (shape, color) not in used:
                break
        used.add((shape, color))
        objs.append(Obj(shape, color, int(c) // grid + 1, int(c) % grid + 1))
    return Scene(grid, objs)


def _draw_obj(draw: ImageDraw.ImageDraw, shape: str, color: str, x0: float, y0: float, cell: int) -> None:
    pad = max(2, cell // 7)
    box = (x0 + pad, y0 + pad, x0 + cell - pad - 1, y0 + cell - pad - 1)
    rgb = COLORS[color]
    if shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "circle":
        draw.ellipse(box, fill=rgb)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=rgb)


def cell_background(row: int, col: int, grid: int, span: int = 60) -> tuple[int, int, int]:
    """The tint of cell (row, col) under ``position_cues``: red falls with the column, green with the row, by
    ``span`` in all from the first to the last."""
    step = span // max(1, grid - 1)
    return (255 - step * (col - 1), 255 - step * (row - 1), 255)


def render_scene(scene: Scene, cell: int, positions: dict[int, tuple[float, float]] | None = None,
                 position_cues: bool = False, cue_span: int = 60) -> Image.Image:
    """Draws the scene; ``positions`` optionally overrides object i's (row, col) with fractional cells."""
    size = scene.grid * cell
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if position_cues:
        for r in range(1, scene.grid + 1):
            for c in range(1, scene.grid + 1):
                draw.rectangle(((c - 1) * cell, (r - 1) * cell, c * cell - 1, r * cell - 1),
                               fill=cell_background(r, c, scene.grid, cue_span))
    for i, o in enumerate(scene.objects):
        row, col = positions.get(i, (o.row, o.col)) if positions else (o.row, o.col)
        _draw_obj(draw, o.shape, o.color, (col - 1) * cell, (row - 1) * cell, cell)
    return img


def _count_answer(scene: Scene, color: str) -> tuple[str, str]:
    """Lists the shapes of ``color`` in reading order (row by row), then counts them."""
    hits = [o.shape for o in sorted(scene.objects, key=lambda o: (o.row, o.col)) if o.color == color]
    return f"{color}: {' '.join(hits) if hits else 'none'}, so {len(hits)}", str(len(hits))


def _image_question(rng: np.random.Generator, domain: str, scene: Scene) -> tuple[str, str, str]:
    """(question, full solution, final answer) for an image domain."""
    objs = scene.objects
    if domain == "shapes-color":
        # the caller guarantees at least one shape kind that occurs once
        kinds = [k for k in SHAPES if sum(o.shape == k for o in objs) == 1]
        kind = kinds[int(rng.integers(len(kinds)))]
        o = next(o for o in objs if o.shape == kind)
        return f"What color is the {kind}?", f"{kind}: {o.color}, so {o.color}", o.color
    if domain == "shapes-count":
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        q = f"How many {color} shapes are there?"
        sol, ans = _count_answer(scene, color)
        return q, sol, ans
    if domain == "shapes-arith":
        c1, c2 = rng.choice(list(COLORS), size=2, replace=False)
        n1 = sum(o.color == c1 for o in objs)
        n2 = sum(o.color == c2 for o in objs)
        q = f"How many {c1} and {c2} shapes are there in total?"
        return q, f"{c1}: {n1}, {c2}: {n2}, so {n1 + n2}", str(n1 + n2)
    if domain == "shapes-position":
        # the caller guarantees two objects in different columns
        pairs = [(a, b) for a in objs for b in objs if a.col != b.col]
        a, b = pairs[int(rng.integers(len(pairs)))]
        side = "left" if a.col < b.col else "right"
        q = f"Is the {a.name} left or right of the {b.name}?"
        return q, f"{a.name} column {a.col}, {b.name} column {b.col}, so {side}", side
    raise ValueError(domain)


def _direction(r0: int, c0: int, r1: int, c1: int) -> str:
    if r0 == r1:
        return "right" if c1 > c0 else "left"
    return "down" if r1 > r0 else "up"


def _make_motion(rng: np.random.Generator, level: int, spec: SyntheticSpec):
    """A scene whose object 0 moves in a straight line along a row or a column."""
    while True:
        scene = _sample_scene(rng, level)
        grid = scene.grid
        mover = scene.objects[0]
        horizontal = bool(rng.integers(2))
        if horizontal:
            start, end = (mover.row, 1), (mover.row, grid)
        else:
            start, end = (1, mover.col), (grid, mover.col)
        if rng.integers(2):
            start, end = end, start
        path_cells = {(start[0], c) for c in range(1, grid + 1)} if horizontal else {(r, start[1]) for r in range(1, grid + 1)}
        if any((o.row, o.col) in path_cells for o in scene.objects[1:]):
            continue
        mover.row, mover.col = start
        frames, positions = [], []
        for t in range(spec.video_frames):
            f = t / (spec.video_frames - 1)
            pos = (start[0] + f * (end[0] - start[0]), start[1] + f * (end[1] - start[1]))
            positions.append(pos)
            frames.append(render_scene(scene, spec.cell, {0: pos}, spec.position_cues, spec.position_cue_span))
        return scene, start, end, frames, positions


def _motion_text_view(scene: Scene, positions) -> str:
    lines = [f"{scene.grid}x{scene.grid} grid video, {len(positions)} frames."]
    still = sorted(scene.objects[1:], key=lambda o: (o.row, o.col))
    for t, (r, c) in enumerate(positions):
        objs = [f"{scene.objects[0].name} at row {round(r, 2):g} column {round(c, 2):g}"]
        objs += [f"{o.name} at row {o.row} column {o.col}" for o in still]
        lines.append(f"frame {t + 1}: " + "; ".join(objs) + ".")
    return " ".join(lines)


def write_video(frames: list[Image.Image], path: Path, fps: float) -> None:
    """Writes an H.264 mp4 with PyAV (single-threaded, so the bytes are deterministic)."""
    import av
    from fractions import Fraction

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv444p"
        stream.thread_count = 1
        stream.options = {"crf": "4", "preset": "medium", "threads": "1"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _text_arith(rng: np.random.Generator, level: int) -> tuple[str, str, str]:
    """Left-to-right evaluation of `a op b op c ...` with + and * following precedence."""
    n = TEXT_OPERANDS[level]
    nums = [int(x) for x in rng.integers(1, 10, size=n)]
    ops = [("+", "*")[int(rng.integers(2))] for _ in range(n - 1)]
    expr = " ".join(str(nums[0]) if i == 0 else f"{ops[i - 1]} {nums[i]}" for i in range(n))
    steps = []
    # multiplications first, left to right
    vals = [nums[0]]
    for op, x in zip(ops, nums[1:]):
        if op == "*":
            prod = vals[-1] * x
            steps.append(f"{vals[-1]} * {x} = {prod}")
            vals[-1] = prod
        else:
            vals.append(x)
    total = vals[0]
    for v in vals[1:]:
        steps.append(f"{total} + {v} = {total + v}")
        total += v
    if not steps:
        steps.append(f"{total}")
    return f"What is {expr}?", ", ".join(steps) + f", so {total}", str(total)


def make_record(rng: np.random.Generator, domain: str, level: int, idx: str, out_dir: Path | None,
                spec: SyntheticSpec) -> dict:
    """One record of ``domain``; its image or video is written under ``out_dir`` (skipped when None)."""
    rec = {"id": idx, "domain": domain, "meta": {"difficulty": level}}
    if domain in IMAGE_DOMAINS:
        scene = _sample_scene(rng, level)
        while (domain == "shapes-position" and len({o.col for o in scene.objects}) < 2) or (
                domain == "shapes-color" and not any(sum(o.shape == k for o in scene.objects) == 1 for k in SHAPES)):
            scene = _sample_scene(rng, level)
        q, sol, ans = _image_question(rng, domain, scene)
        rel = f"images/{idx}.png"
        if out_dir is not None:
            img = render_scene(scene, spec.cell, position_cues=spec.position_cues, cue_span=spec.position_cue_span)
            img.save(out_dir / rel, optimize=False)
        rec["messages"] = [{"role": "user", "content": [{"type": "image", "image": rel}, {"type": "text", "text": q}]}]
        rec["text_view"] = scene.describe()
        rec["meta"]["scene"] = {"grid": scene.grid, "objects": [o.__dict__ for o in scene.objects]}
    elif domain in VIDEO_DOMAINS:
        scene, start, end, frames, positions = _make_motion(rng, level, spec)
        mover = scene.objects[0]
        if domain == "motion":
            d = _direction(*start, *end)
            q = f"Which direction does the {mover.name} move?"
            if spec.motion_solution == "cells":
                sol = f"{mover.name} row {start[0]} column {start[1]} to row {end[0]} column {end[1]}, so {d}"
            else:
                sol = f"{mover.name}: {d}, so {d}"
            ans = d
        else:  # video-color: the colour of the shape that moves (static shapes are distractors)
            q = f"What color is the moving {mover.shape}?"
            sol, ans = f"{mover.shape}: {mover.color}, so {mover.color}", mover.color
        rel = f"videos/{idx}.mp4"
        if out_dir is not None:
            write_video(frames, out_dir / rel, spec.video_fps)
        rec["messages"] = [{"role": "user", "content": [{"type": "video", "video": rel}, {"type": "text", "text": q}]}]
        rec["text_view"] = _motion_text_view(scene, positions)
        rec["meta"]["scene"] = {
            "grid": scene.grid, "objects": [o.__dict__ for o in scene.objects],
            "start": list(start), "end": list(end), "frames": spec.video_frames, "fps": spec.video_fps,
        }
    else:
        q, sol, ans = _text_arith(rng, level)
        rec["messages"] = [{"role": "user", "content": [{"type": "text", "text": q}]}]
    rec["answer"] = ans
    rec["meta"]["solution"] = sol
    return rec


def extract_final(response: str) -> str | None:
    """The final answer of the synthetic format: the text after the last ``so``; None if absent."""
    import re

    m = re.findall(r"\bso\s+([A-Za-z0-9\-]+)", response)
    return m[-1].strip().lower() if m else None


def _dedupe_key(rec: dict) -> str:
    return json.dumps([rec["domain"], rec["messages"][0]["content"][-1]["text"], rec.get("text_view")], sort_keys=True)


def generate(spec: SyntheticSpec, out_dir: str | Path, progress: bool = True) -> dict[str, Path]:
    """Writes ``train.jsonl`` and ``test.jsonl`` (plus images/, videos/ and per-modality subsets
    ``{split}_{image,video,text}.jsonl``) under ``out_dir``.

    Test records whose question and scene also occur in train are regenerated, so the splits
    never overlap (``disjoint=False`` allows overlap: level 0 has only a few hundred distinct
    records). Returns the paths of the two JSONL files.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    paths, seen = {}, set()
    for split, n, seed in (("train", spec.n_train, spec.seed), ("test", spec.n_test, spec.seed + 1_000_003)):
        rng = np.random.default_rng(seed)
        records = []
        bar = tqdm(total=n, desc=f"synthetic {split}", disable=not progress, leave=False)
        i = 0
        while len(records) < n:
            if i > 50 * n + 1000:
                raise ValueError(
                    f"could not draw {n} {split} records unseen in train after {i} tries: the question space of "
                    f"domains {list(spec.domains)} at levels {list(spec.levels)} is too small (use disjoint=False, "
                    "or more objects / a higher level)")
            domain = spec.domains[len(records) % len(spec.domains)]
            level = spec.levels[int(rng.integers(len(spec.levels)))]
            rec = make_record(rng, domain, level, f"{split}-{i:06d}", out, spec)
            i += 1
            key = _dedupe_key(rec)
            if split == "test" and spec.disjoint and key in seen:
                continue
            if split == "train":
                seen.add(key)
            records.append(rec)
            bar.update(1)
        bar.close()
        paths[split] = out / f"{split}.jsonl"
        with open(paths[split], "w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
        # per-modality subsets, for data mixtures that route each modality to its own teacher
        for modality, domains in (("image", IMAGE_DOMAINS), ("video", VIDEO_DOMAINS), ("text", TEXT_DOMAINS)):
            with open(out / f"{split}_{modality}.jsonl", "w") as fh:
                for rec in records:
                    if rec["domain"] in domains:
                        fh.write(json.dumps(rec) + "\n")
    with open(out / "spec.json", "w") as fh:
        json.dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}, fh, indent=1)
    return paths


def check_answer(response: str, answer: str) -> bool | None:
    """Exact check of the synthetic format; None when no final answer can be extracted."""
    pred = extract_final(response)
    if pred is None:
        return None
    return pred == str(answer).strip().lower()



def text_corpus(n: int = 3000, seed: int = 12345) -> list[str]:
    """Questions, solutions and text views of ``n`` unrendered records: a tokenizer training corpus."""
    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(levels=(1, 2, 3))
    texts = []
    for i in range(n):
        domain = ALL_DOMAINS[i % len(ALL_DOMAINS)]
        rec = make_record(rng, domain, spec.levels[i % len(spec.levels)], f"c{i}", None, spec)
        texts.append(rec["messages"][0]["content"][-1]["text"])
        texts.append(rec["meta"]["solution"])
        if rec.get("text_view"):
            texts.append(rec["text_view"])
    return texts
