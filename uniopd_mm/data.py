"""The sample schema, a JSONL loader that never loses a bad record silently, and the rejects file.

A record (one JSON object per line):

    id          str | int, unique
    messages    chat turns; content is a string or a list of parts
                {"type": "text", "text": ...} | {"type": "image", "image": PATH} | {"type": "video", "video": PATH}
                (PATH relative to the JSONL file, or absolute)
      or the short form: prompt (str) + images (list of PATH) + videos (list of PATH)
    answer      str | number, optional (no answer: verifiers say "unknown")
    domain      str, optional (default "default"); picks the verifier
    teacher     str, optional; routes the record to a named teacher
    text_view   str, optional; a textual description of the record's images/videos
    meta        dict, optional; carried through untouched

Every problem raises a subclass of :class:`DataError` naming the file, the line and the record id.
In lenient mode the loader writes the record to a :class:`RejectLog` and goes on; in strict mode it
raises at the first bad record.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A bad record; ``str(err)`` names where it is."""

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None,
                 record_id: str | None = None):
        self.reason, self.path, self.line, self.record_id = reason, str(path) if path else None, line, record_id
        where = ":".join(str(x) for x in (self.path, self.line) if x is not None)
        rid = f" (record {record_id!r})" if record_id is not None else ""
        super().__init__(f"{type(self).__name__}: {where}{rid}: {reason}" if where else f"{type(self).__name__}{rid}: {reason}")


class MalformedJSON(DataError):
    pass


class MissingField(DataError):
    pass


class BadFieldType(DataError):
    pass


class MissingMedia(DataError):
    pass


class CorruptImage(DataError):
    pass


class UndecodableVideo(DataError):
    pass


class EmptyAnswer(DataError):
    pass


class MissingTextView(DataError):
    pass


class PromptTooLong(DataError):
    pass


@dataclass
class Sample:
    """One normalised record: ``messages`` in list-of-parts form with absolute media paths."""

    id: str
    messages: list[dict]
    answer: str | None = None
    domain: str = "default"
    teacher: str | None = None
    text_view: str | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""  # "path:line", for error messages

    @property
    def key(self) -> str:
        """A key unique across files (the source location), for caches."""
        return self.source or self.id

    @property
    def images(self) -> list[str]:
        return [p["image"] for m in self.messages for p in m["content"] if p["type"] == "image"]

    @property
    def videos(self) -> list[str]:
        return [p["video"] for m in self.messages for p in m["content"] if p["type"] == "video"]

    @property
    def modality(self) -> str:
        return "video" if self.videos else "image" if self.images else "text"

    def location(self) -> tuple[str | None, int | None]:
        if ":" in self.source:
            path, line = self.source.rsplit(":", 1)
            return path, int(line)
        return (self.source or None), None

    def error(self, cls: type[DataError], reason: str) -> DataError:
        path, line = self.location()
        return cls(reason, path, line, self.id)


class RejectLog:
    """Counts bad records by error type and appends each to a JSONL rejects file (thread-safe)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, err: DataError, raw: Any = None) -> None:
        entry = {
            "error": type(err).__name__, "message": str(err), "path": err.path, "line": err.line,
            "id": err.record_id,
        }
        if raw is not None:
            entry["raw"] = raw if isinstance(raw, (dict, list)) else str(raw)[:2000]
        with self._lock:
            self.counts[type(err).__name__] += 1
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def metrics(self, prefix: str = "data/rejected") -> dict[str, float]:
        out = {f"{prefix}": float(self.total)}
        out.update({f"{prefix}_{k}": float(v) for k, v in sorted(self.counts.items())})
        return out


class RejectOnce:
    """``on_error`` of an evaluation: a test record whose prompt failed to build is written to ``log``
    the first time (or raised, with ``strict``) and scored wrong at every evaluation."""

    def __init__(self, log: RejectLog, strict: bool = False):
        self.log, self.strict, self.seen = log, strict, set()

    def __call__(self, err: DataError) -> None:
        if err.record_id in self.seen:
            return
        self.seen.add(err.record_id)
        if self.strict:
            raise err
        self.log.add(err)


class PromptCache:
    """Encoded prompts (with their pixel tensors) by ``Sample.key``: at most ``limit`` of them and at most
    ``max_bytes`` of memory (``size(value)`` of each), the least recently used out first, so memory stays bounded
    on a long run over a large image set (a 1-megapixel image is ~5 MB of float32 patches). ``limit=0`` or
    ``max_bytes=0`` keeps none (every prompt is encoded when it is used); a prompt larger than ``max_bytes``
    is used and not kept."""

    def __init__(self, limit: int, encode, max_bytes: int | None = None, size=None):
        if limit < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError(f"prompt cache limits must be >= 0, got {limit} entries, {max_bytes} bytes")
        self.limit, self.encode, self.entries = limit, encode, OrderedDict()
        self.max_bytes, self.size, self.nbytes = max_bytes, size or (lambda value: 0), 0

    def __call__(self, sample):
        key = sample.key
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key][0]
        value = self.encode(sample)
        nbytes = self.size(value)
        if self.limit and self.max_bytes != 0 and (self.max_bytes is None or nbytes <= self.max_bytes):
            self.entries[key] = (value, nbytes)
            self.nbytes += nbytes
            while len(self.entries) > self.limit or (self.max_bytes is not None and self.nbytes > self.max_bytes):
                self.nbytes -= self.entries.popitem(last=False)[1][1]
        return value

    def __len__(self) -> int:
        return len(self.entries)


def rank_file(path: str | Path, rank: int) -> Path:
    """``path`` for rank 0, ``<stem>.rank<r><suffix>`` beside it for the other ranks (one writer per file)."""
    path = Path(path)
    return path if rank == 0 else path.with_suffix(f".rank{rank}{path.suffix}")


def _check_type(rec: dict, key: str, types: tuple, err: DataError) -> None:
    if key in rec and rec[key] is not None and not isinstance(rec[key], types):
        names = "/".join(t.__name__ for t in types)
        raise err(f"field {key!r} must be {names}, got {type(rec[key]).__name__}")


def _resolve(path: Any, base: Path, kind: str, mk) -> str:
    if not isinstance(path, str) or not path:
        raise mk(BadFieldType, f"{kind} path must be a non-empty string, got {path!r}")
    p = Path(path[7:] if path.startswith("file://") else path)
    if not p.is_absolute():
        p = base / p
    if not p.exists():
        raise mk(MissingMedia, f"{kind} file not found: {p}")
    return str(p)


def _normalise_content(content: Any, base: Path, mk) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise mk(BadFieldType, f"message content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for part in content:
        if not isinstance(part, dict):
            raise mk(BadFieldType, f"content part must be an object, got {part!r}")
        kind = part.get("type") or next((k for k in ("image", "video", "text") if k in part), None)
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise mk(BadFieldType, "text part needs a string 'text'")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image", "video"):
            src = part.get(kind)
            extra = {k: v for k, v in part.items() if k not in ("type", kind)}
            parts.append({"type": kind, kind: _resolve(src, base, kind, mk), **extra})
        else:
            raise mk(BadFieldType, f"unknown content part type {kind!r} (expected text, image or video)")
    return parts


def parse_record(rec: Any, path: str | Path = "<memory>", line: int | None = None) -> Sample:
    """Validates and normalises one decoded JSON record; raises a :class:`DataError`."""
    path = Path(path)
    rid = rec.get("id") if isinstance(rec, dict) else None

    def mk(cls, reason):
        return cls(reason, path, line, None if rid is None else str(rid))

    if not isinstance(rec, dict):
        raise mk(BadFieldType, f"a record must be a JSON object, got {type(rec).__name__}")
    if rid is None:
        raise mk(MissingField, "required field 'id' is missing")
    _check_type(rec, "id", (str, int), lambda m: mk(BadFieldType, m))
    for key, types in (("answer", (str, int, float)), ("domain", (str,)), ("teacher", (str,)),
                       ("text_view", (str,)), ("meta", (dict,)), ("prompt", (str,)),
                       ("images", (list,)), ("videos", (list,)), ("messages", (list,))):
        _check_type(rec, key, types, lambda m: mk(BadFieldType, m))
    base = path.parent
    if rec.get("messages") is not None:
        if rec.get("prompt") is not None:
            raise mk(BadFieldType, "give either 'messages' or 'prompt', not both")
        if not rec["messages"]:
            raise mk(MissingField, "'messages' is empty")
        messages = []
        for m in rec["messages"]:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise mk(BadFieldType, f"each message needs 'role' and 'content', got {m!r}"[:300])
            if m["role"] not in ("system", "user", "assistant"):
                raise mk(BadFieldType, f"unknown role {m['role']!r}")
            messages.append({"role": m["role"], "content": _normalise_content(m["content"], base, mk)})
    elif rec.get("prompt") is not None:
        parts = [{"type": "image", "image": _resolve(p, base, "image", mk)} for p in rec.get("images") or []]
        parts += [{"type": "video", "video": _resolve(p, base, "video", mk)} for p in rec.get("videos") or []]
        parts.append({"type": "text", "text": rec["prompt"]})
        messages = [{"role": "user", "content": parts}]
    else:
        raise mk(MissingField, "a record needs 'messages' or 'prompt'")
    answer = rec.get("answer")
    if answer is not None:
        answer = str(answer)
        if not answer.strip():
            raise mk(EmptyAnswer, "'answer' is empty")
    return Sample(
        id=str(rid), messages=messages, answer=answer, domain=rec.get("domain") or "default",
        teacher=rec.get("teacher"), text_view=rec.get("text_view"), meta=rec.get("meta") or {},
        source=f"{path}:{line}" if line is not None else str(path),
    )


def check_media(sample: Sample) -> None:
    """Checks every image and video of ``sample`` in order and raises for the first that fails, with the class
    of that file's fault: MissingMedia (no such file, e.g. deleted after loading), CorruptImage, or
    UndecodableVideo (including a video too short for the Qwen-VL processors)."""
    from PIL import Image

    for p in sample.images + sample.videos:
        if not Path(p).is_file():
            raise sample.error(MissingMedia, f"no such file: {p}")
    from PIL import ImageFile

    # NOTE: a library may set PIL's process-wide LOAD_TRUNCATED_IMAGES (lmms-eval does on import), after which a
    # truncated image decodes without error; the check runs with it off and puts it back
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        for p in sample.images:
            try:
                with Image.open(p) as im:
                    im.load()
            except Exception as e:  # PIL raises several unrelated types
                raise sample.error(CorruptImage, f"cannot decode image {p}: {e}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    for p in sample.videos:
        check_video(p, sample)


MIN_VIDEO_FRAMES = 2  # qwen-vl-utils samples whole temporal patches of 2 frames


def check_video(path: str, sample: Sample | None = None) -> None:
    def fail(reason):
        return sample.error(UndecodableVideo, reason) if sample else UndecodableVideo(reason)

    try:
        import decord

        vr = decord.VideoReader(path, num_threads=1)
        frames = len(vr)
        if frames:
            vr.get_batch([0, frames - 1])
    except Exception as e:
        raise fail(f"cannot decode video {path}: {str(e).splitlines()[0][:200]}") from None
    if frames < MIN_VIDEO_FRAMES:
        raise fail(f"video {path} has {frames} frame(s); the Qwen-VL processors need at least {MIN_VIDEO_FRAMES} "
                   "(one temporal patch)")


def load_jsonl(path: str | Path, strict: bool = False, rejects: RejectLog | None = None,
               verify_media: bool = True, progress: bool = False) -> list[Sample]:
    """Reads a JSONL file of the sample schema.

    Lenient (default): a bad line is written to ``rejects`` (with its error and raw text) and
    skipped. Strict: the first bad line raises its :class:`DataError`. Duplicate ids are errors.
    """
    from tqdm import tqdm

    path = Path(path)
    if not path.exists():
        hint = " (the tiny configs read artifacts/ that `make models data` builds)" if "artifacts" in Path(path).parts else ""
        raise FileNotFoundError(f"data file not found: {path}{hint}")
    rejects = rejects if rejects is not None else RejectLog(None)
    samples, seen = [], set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(tqdm(fh, desc=f"load {path.name}", disable=not progress, unit="rec"), start=1):
            if not raw.strip():
                continue
            try:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise MalformedJSON(f"invalid JSON: {e.msg} at column {e.colno}", path, lineno) from None
                sample = parse_record(rec, path, lineno)
                if sample.id in seen:
                    raise BadFieldType(f"duplicate id {sample.id!r}", path, lineno, sample.id)
                if verify_media:
                    check_media(sample)
            except DataError as err:
                if strict:
                    raise
                rejects.add(err, raw.rstrip("\n"))
                continue
            seen.add(sample.id)
            samples.append(sample)
    return samples


class PromptSampler:
    """Deterministic prompt order: a fresh seeded permutation each epoch, resumable from its state.

    ``next(k)`` returns the next k indices (crossing into the next epoch when needed); ``state()``
    and ``load_state()`` let a resumed run see exactly the prompts an uninterrupted run would.
    """

    def __init__(self, n: int, seed: int = 0):
        if n <= 0:
            raise ValueError("no training records left to sample from")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        import numpy as np

        return np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()

    def next(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.n - self.pos)
            out += self._order[self.pos:self.pos + take]
            self.pos += take
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "seed": self.seed}

    def load_state(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(f"checkpoint sampler was built for {state['n']} records / seed {state['seed']}, "
                             f"this run has {self.n} / {self.seed}: the data changed")
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._permutation(self.epoch)


class MixtureSampler:
    """Draws prompts from several datasets by weight; each dataset keeps its own epoch order.

    Indices refer to the datasets concatenated in order. Draw j of call c picks its dataset with a
    generator seeded by (seed, c), so the sequence is a pure function of the seed and resumable.
    """

    def __init__(self, sizes: list[int], weights: list[float], seed: int = 0):
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(f"every mixture dataset needs records, got sizes {sizes}")
        total = float(sum(weights))
        if total <= 0:
            raise ValueError("mixture weights must not all be 0")
        self.probs = [w / total for w in weights]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.samplers = [PromptSampler(n, seed * 1000 + 17 * i) for i, n in enumerate(sizes)]
        self.seed, self.calls = seed, 0

    def next(self, k: int) -> list[int]:
        import numpy as np

        picks = np.random.default_rng([self.seed, self.calls, 7]).choice(len(self.probs), size=k, p=self.probs)
        self.calls += 1
        return [self.offsets[d] + self.samplers[d].next(1)[0] for d in picks.tolist()]

    def state(self) -> dict:
        return {"calls": self.calls, "samplers": [s.state() for s in self.samplers]}

    def load_state(self, state: dict) -> None:
        if len(state["samplers"]) != len(self.samplers):
            raise ValueError("checkpoint mixture has another number of datasets: the data changed")
        self.calls = state["calls"]
        for s, st in zip(self.samplers, state["samplers"]):
            s.load_state(st)


def load_test_records(data, out: str | Path, rank: int, limit: int) -> tuple[list[Sample], RejectOnce]:
    """The first ``limit`` records of ``data.test_path`` (a DataConfig) and the ``on_error`` for their
    evaluations. Every rank reads the whole file; rank 0 writes its load-time rejects to
    ``<out>/rejects_test.jsonl``, each rank the records whose prompt fails to build in its shard
    (``rank_file``), once each."""
    log = RejectLog(rank_file(Path(out) / "rejects_test.jsonl", rank))
    samples = load_jsonl(data.test_path, data.strict, log if rank == 0 else RejectLog(None), data.verify_media)
    return samples[:limit], RejectOnce(log, data.strict)


def load_training_data(d, seed: int, rejects: RejectLog, progress: bool = False):
    """The training records of data config ``d`` and their sampler: one file, or a weighted mixture whose
    entries tag their records with a teacher."""
    if not d.mixture:
        samples = load_jsonl(d.train_path, d.strict, rejects, d.verify_media, progress=progress)
        return samples, PromptSampler(len(samples), seed)
    samples, sizes = [], []
    for entry in d.mixture:
        part = load_jsonl(entry.path, d.strict, rejects, d.verify_media, progress=progress)
        for s in part:
            s.teacher = s.teacher or entry.teacher
        samples += part
        sizes.append(len(part))
    return samples, MixtureSampler(sizes, [e.weight for e in d.mixture], seed)


def data_error_names() -> set[str]:
    """The names of DataError and every subclass defined so far: the reject types counted per step."""
    def names(cls) -> set[str]:
        return {cls.__name__}.union(*(names(c) for c in cls.__subclasses__()))

    return names(DataError)


class StepPrompts:
    """Each step's prompts for this rank, for distillation and SFT alike.

    ``next(k)`` draws k record indices with the seeded ``sampler`` (the same order on every rank), keeps
    every ``world``-th one from ``rank``, and encodes it. A record whose ``check`` or encoding raises
    DataError is rejected once (to ``rejects``, keyed by ``Sample.key``: ids repeat across the files of a
    mixture) and skipped whenever it is drawn again; with ``strict`` the error is raised. When a draw leaves
    some rank without a prompt (its records rejected), every rank draws again (``all_reduce`` tells them: the
    draws stay the same on every rank), up to ``MAX_REDRAWS`` times.
    ``state()`` / ``load_state()`` carry the sampler and the rejected keys through checkpoints.
    """

    MAX_REDRAWS = 16

    def __init__(self, samples: list[Sample], sampler, encode, rejects: RejectLog, strict: bool = False,
                 rank: int = 0, world: int = 1, check=None, all_reduce=None):
        if world > 1 and all_reduce is None:
            raise ValueError("StepPrompts on several ranks needs the engine's all_reduce")
        self.samples, self.sampler, self.encode, self.rejects = samples, sampler, encode, rejects
        self.strict, self.rank, self.world, self.check = strict, rank, world, check
        self.all_reduce = all_reduce
        self.bad_keys: set[str] = set()
        self.redraws = 0  # draws thrown away because a rank had no prompt left

    def next(self, k: int) -> tuple[list[int], list[int], list[int], list]:
        """(every index drawn, this rank's kept indices, their positions in the step, their encoded prompts)."""
        if k < self.world:
            raise ValueError(f"{k} prompts a step cannot give each of {self.world} ranks one "
                             f"(train.prompts_per_step must be >= the number of processes)")
        for _ in range(self.MAX_REDRAWS):
            drawn, kept, positions, prompts = self._draw(k)
            fewest = len(prompts)
            if self.all_reduce is not None:
                import torch

                fewest = int(self.all_reduce(torch.tensor([float(fewest)]), "min").item())
            if fewest > 0:
                return drawn, kept, positions, prompts
            self.redraws += 1
        raise RuntimeError(f"rank {self.rank}: {self.MAX_REDRAWS} draws in a row left a rank with every prompt "
                           f"rejected (see {self.rejects.path} and the other ranks' rejects files)")

    def _draw(self, k: int):
        drawn = self.sampler.next(k)
        kept, positions, prompts = [], [], []
        for pos in range(self.rank, len(drawn), self.world):
            s = self.samples[drawn[pos]]
            if s.key in self.bad_keys:
                continue
            try:
                if self.check is not None:
                    self.check(s)
                prompts.append(self.encode(s))
            except DataError as err:
                self.bad_keys.add(s.key)
                if self.strict:
                    raise
                self.rejects.add(err)
                continue
            kept.append(drawn[pos])
            positions.append(pos)
        return drawn, kept, positions, prompts

    def state(self) -> dict:
        """The sampler's state and this rank's rejected keys (``checkpoint.save`` writes each rank's)."""
        return {"sampler": self.sampler.state(), "bad_keys": sorted(self.bad_keys)}

    def load_state(self, state: dict) -> None:
        self.sampler.load_state(state["sampler"])
        self.bad_keys = set(state.get("bad_keys", state.get("bad_ids", [])))  # bad_ids: SFT checkpoints before 2026-11-30
