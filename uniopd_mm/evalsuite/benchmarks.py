"""The benchmarks of the paper (RECIPE section 6) and the synthetic one: where each is published, the
files expected under ``DATA_DIR/<name>/``, a loader for the released schema, the prompt and the metric.

Every loader returns :class:`uniopd_mm.data.Sample` records (the framework's one sample schema), so the
same processors build prompts for any student or teacher family. Embedded images (Parquet columns
holding ``{"bytes", "path"}``) are written once to ``DATA_DIR/<name>/_media/``. Nothing is downloaded.

Prompts follow lmms-eval's published ones for the document and diagram sets (AI2D, ChartQA, DocVQA,
InfoVQA: answer with the letter / a single word or phrase); the math sets ask for step-by-step
reasoning and a ``\\boxed{}`` answer, the code sets for one fenced Python block. docs/evaluation.md's
"Evaluation" section lists where we differ from the official evaluators.
"""

from __future__ import annotations

import base64
import glob
import io
import json
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uniopd_mm.data import Sample, load_jsonl

from . import official, scorers

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
MCQ_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
CHART_SUFFIX = "\nAnswer the question with a single word."
CODE_SUFFIX = "\nWrite the complete solution in Python in one ```python code block."


class MissingData(FileNotFoundError):
    """A benchmark's files are not under the data directory (the message says which and where)."""


@dataclass
class Benchmark:
    name: str
    source: str  # where the files come from, for the missing-data message
    patterns: list[str]  # globs under DATA_DIR/<name>/, any of which may hold the records
    load: Callable[[list[Path], Path], list[Sample]]  # (files, media dir) -> samples
    score: Callable[[str, Sample], float]
    group: str  # table grouping: mm-math, logic, documents, math, code, synthetic
    n: int = 1  # samples per prompt by default (avg@n), as the paper reports
    temperature: float = 0.0
    max_new_tokens: int = 2048
    notes: str = ""
    options: dict = field(default_factory=dict)
    lenient: Callable[[str, Sample], float] | None = None  # --lenient: the looser answer extraction, own name
    aggregate: Callable[[list[Sample], list[float]], dict] | None = None  # (samples, per-item scores) -> extra scores

    def files(self, data_dir: Path) -> list[Path]:
        root = Path(data_dir) / self.name
        found = sorted({Path(p) for pat in self.patterns for p in glob.glob(str(root / pat), recursive=True)})
        return [p for p in found if "_media" not in p.parts]

    def load_samples(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        files = self.files(data_dir)
        if not files:
            raise MissingData(
                f"{self.name}: no data. Put the files of {self.source} under {Path(data_dir) / self.name}/ "
                f"(any of: {', '.join(self.patterns)}). Nothing is downloaded.")
        samples = self.load(files, Path(data_dir) / self.name / "_media")
        return samples[:limit] if limit else samples


# -- reading the released files -----------------------------------------------------------------------------
def read_rows(files: list[Path]) -> list[dict]:
    """Rows of Parquet, JSON (a list, or a dict of id -> row) and JSONL files, in file order."""
    rows: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(f).to_pylist())
        elif f.suffix == ".jsonl":
            rows.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
        elif f.suffix == ".json":
            data = json.loads(f.read_text())
            if isinstance(data, dict):
                data = [{"_key": k, **v} for k, v in data.items()]
            rows.extend(data)
    return rows


def media_path(value, media_dir: Path, stem: str, base: Path | None = None) -> str:
    """An absolute image path from a Parquet image struct ({"bytes", "path"}), raw bytes, or a path
    relative to the file's folder."""
    if isinstance(value, dict) and value.get("bytes"):
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray)):
        from PIL import Image

        media_dir.mkdir(parents=True, exist_ok=True)
        out = media_dir / f"{stem}.png"
        if not out.exists():
            Image.open(io.BytesIO(value)).convert("RGB").save(out)
        return str(out.resolve())
    if isinstance(value, dict):
        value = value.get("path")
    if not value:
        raise ValueError(f"record {stem}: no image")
    p = Path(value)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


def safe_stem(x) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(x))


def user(text: str, image: str | None = None) -> list[dict]:
    parts = ([{"type": "image", "image": image}] if image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def lettered(options: list[str]) -> str:
    return "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))


# -- multimodal math and logic: lmms-eval 0.7.3's tasks (evalsuite/official.py) -------------------------------
MATHVISION_PROMPT = 'Please solve the problem step by step and put your answer in one "\\boxed{}".'
MATHVISION_MC = "Answer the question with the option's letter from the given choices directly."


def load_mathvision(files, media):
    """MathLLMs/MathVision: id, question (with <image1>), options (list, empty if free-form), image (path),
    decoded_image (image struct), answer, solution, level, subject. The prompt is lmms-eval's ``mathvision_test``
    one, word for word (the question follows the instruction without a space)."""
    out = []
    for r in read_rows(files):
        opts = [str(o) for o in (r.get("options") or [])]
        img = media_path(r.get("decoded_image") or r.get("image"), media, f"mathvision-{safe_stem(r['id'])}", files[0].parent)
        choices = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(opts))
        text = MATHVISION_PROMPT + (f"{r['question']}\nChoices: {choices}\n{MATHVISION_MC}" if opts else str(r["question"]))
        out.append(Sample(id=str(r["id"]), messages=user(text, img), answer=str(r["answer"]), domain="mathvision",
                          meta={"options": opts, "subject": r.get("subject"), "level": r.get("level")}))
    return out


def lenient_mathvision(response, s):
    if s.meta.get("options"):
        return scorers.choice(response, s.answer, s.meta["options"])
    return scorers.math(response, s.answer)


def reasoning_prompt(text: str, image: str | None) -> list[dict]:
    """lmms-eval's reasoning tasks: their system prompt (<think> then <answer>), then the image and the question."""
    return [{"role": "system", "content": [{"type": "text", "text": official.REASONING_SYSTEM_PROMPT}]}] + user(text.strip(), image)


def load_dynamath(files, media):
    """DynaMath (kcz358/DynaMath as lmms-eval reads it, or DynaMath_Sample's sample_variant<k>.parquet): id (the
    seed question, shared by its variants), question (options inline), decoded_image or image, ground_truth,
    answer_type, subject. Variants of one seed question form a group (average and worst-case scores)."""
    out = []
    for f in files:
        stem = f.stem.replace("sample_", "")
        for i, r in enumerate(read_rows([f])):
            group = str(r.get("id", r.get("qid", i)))
            variant = str(r.get("question_id", stem))
            img = media_path(r.get("decoded_image") or r.get("image"), media, f"dynamath-{safe_stem(group)}-{safe_stem(variant)}",
                             f.parent)
            out.append(Sample(id=f"{group}-{variant}", messages=reasoning_prompt(str(r["question"]), img),
                              answer=str(r["ground_truth"]), domain="dynamath",
                              meta={"group": group, "answer_type": r.get("answer_type"), "subject": r.get("subject")}))
    return out


def lenient_dynamath(response, s):
    kind = str(s.meta.get("answer_type", "")).lower()
    if "multiple" in kind:
        return scorers.choice(response, s.answer)
    if "float" in kind:  # DynaMath accepts floats within 1e-3 of the truth
        from uniopd_mm.verifiers.extract import final_answer, to_float

        pred, gold = to_float(final_answer(response)), to_float(s.answer)
        if pred is not None and gold is not None:
            return float(abs(pred - gold) <= 1e-3)
    return scorers.math(response, s.answer)


def load_wemath(files, media):
    """We-Math/We-Math (testmini): ID (the problem), key ("2steps_1" .. "3steps_multi", or a one-step key),
    question, option ("A. ...; B. ..."), answer (letter), image_path or image, knowledge concept."""
    out = []
    for r in read_rows(files):
        rid, key = str(r.get("ID", r.get("id"))), str(r.get("key", ""))
        img = media_path(r.get("image") or r.get("image_path"), media, f"wemath-{safe_stem(rid)}-{safe_stem(key)}",
                         files[0].parent)
        out.append(Sample(id=f"{rid}-{key}".rstrip("-"), messages=reasoning_prompt(f"{r['question']}\n{r.get('option', '')}", img),
                          answer=str(r["answer"]), domain="wemath",
                          meta={"problem": rid, "key": key, "concept": r.get("knowledge concept")}))
    return out


def load_logicvista(files, media):
    """LogicVista: lscpku/LogicVista (question, image, answer) as lmms-eval reads it, or the GitHub release's
    data/dataset.json (id -> {imagename, question, answer ("A" or "A, C"), skill}) with data/images/."""
    out = []
    for i, r in enumerate(read_rows(files)):
        rid = str(r.get("_key", r.get("id", i)))
        img = media_path(r.get("image") or f"images/{r['imagename']}", media, f"logicvista-{safe_stem(rid)}", files[0].parent)
        out.append(Sample(id=rid, messages=reasoning_prompt(str(r["question"]), img), answer=str(r["answer"]),
                          domain="logicvista", meta={"skill": r.get("skill")}))
    return out


def load_visulogic(files, media):
    """VisuLogic data.jsonl: id, question (options inline), image_path, label (A-D), tag; the images in images/ or in
    the release's images.zip (read from the archive once, into the media folder)."""
    out = []
    for f in files:
        archive = f.parent / "images.zip"
        for r in read_rows([f]):
            rid = str(r["id"])
            path = r.get("image") or r["image_path"]
            if isinstance(path, str) and not (f.parent / path).exists() and archive.exists():
                path = unzip_member(archive, path.lstrip("./"), media)
            img = media_path(path, media, f"visulogic-{safe_stem(rid)}", f.parent)
            out.append(Sample(id=rid, messages=user(f"{str(r['question']).strip()}\nAnswer with the option letter only.", img),
                              answer=str(r["label"]).strip().upper()[:1], domain="visulogic", meta={"tag": r.get("tag")}))
    return out


def unzip_member(archive: Path, member: str, media: Path) -> str:
    import zipfile

    out = media / "visulogic" / member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            out.write_bytes(z.read(member))
    return str(out.resolve())


def wemath_aggregate(samples, per_item):
    return official.wemath_four_way([(s.meta["problem"], s.meta["key"], v) for s, v in zip(samples, per_item)])


def dynamath_aggregate(samples, per_item):
    return official.dynamath_variants([(s.meta["group"], v) for s, v in zip(samples, per_item)])


# -- documents and diagrams ------------------------------------------------------------------------------
def load_ai2d(files, media):
    """lmms-lab/ai2d: question, options (list), answer (index as a string), image."""
    out = []
    for i, r in enumerate(read_rows(files)):
        opts = list(r["options"])
        img = media_path(r["image"], media, f"ai2d-{i}", files[0].parent)
        out.append(Sample(id=str(r.get("id", i)), messages=user(f"{r['question']}\n{lettered(opts)}{MCQ_SUFFIX}", img),
                          answer=chr(65 + int(r["answer"])), domain="ai2d", meta={"options": opts}))
    return out


def load_chartqa(files, media):
    """lmms-lab/ChartQA (test): type (human / augmented), question, answer, image."""
    out = []
    for i, r in enumerate(read_rows(files)):
        img = media_path(r["image"], media, f"chartqa-{i}", files[0].parent)
        out.append(Sample(id=str(i), messages=user(str(r["question"]) + CHART_SUFFIX, img), answer=str(r["answer"]),
                          domain="chartqa", meta={"type": r.get("type")}))
    return out


def load_docvqa(files, media, name="docvqa"):
    """lmms-lab/DocVQA (DocVQA / InfographicVQA configs, validation): questionId, question, answers (list),
    image, and more columns left alone."""
    out = []
    for r in read_rows(files):
        rid = str(r["questionId"])
        img = media_path(r["image"], media, f"{name}-{safe_stem(rid)}", files[0].parent)
        out.append(Sample(id=rid, messages=user(str(r["question"]) + SHORT_SUFFIX, img), answer=str(r["answers"][0]),
                          domain=name, meta={"answers": [str(a) for a in r["answers"]]}))
    return out


# -- text math ---------------------------------------------------------------------------------------------
def load_math_text(name):
    def load(files, media):
        """AIME / HMMT releases: problem (or question), answer, id / problem_idx."""
        out = []
        for i, r in enumerate(read_rows(files)):
            rid = str(r.get("id", r.get("problem_idx", r.get("ID", i))))
            q = r.get("problem", r.get("question", r.get("Problem")))
            out.append(Sample(id=rid, messages=user(str(q) + MATH_SUFFIX), answer=str(r.get("answer", r.get("Answer"))),
                              domain=name))
        return out

    return load


# -- code --------------------------------------------------------------------------------------------------
def load_humanevalplus(files, media):
    """evalplus/humanevalplus: task_id, prompt, canonical_solution, entry_point, test (defines check)."""
    out = []
    for r in read_rows(files):
        text = f"Complete this Python function.\n```python\n{r['prompt']}```{CODE_SUFFIX}"
        out.append(Sample(id=str(r["task_id"]), messages=user(text), answer=None, domain="humanevalplus",
                          meta={"prompt": r["prompt"], "tests": r["test"], "entry_point": r["entry_point"]}))
    return out


def score_humanevalplus(response, s):
    from uniopd_mm.verifiers import extract_code
    from uniopd_mm.verifiers.sandbox import run_program

    code = extract_code(response)
    if code is None:
        return 0.0
    if f"def {s.meta['entry_point']}" not in code:  # a body only: complete the given prompt
        code = s.meta["prompt"] + code
    program = f"{code}\n\n{s.meta['tests']}\n\ncheck({s.meta['entry_point']})\n"
    return float(run_program(program, timeout=20.0, cpu_seconds=20).ok)


def load_mbppplus(files, media):
    """evalplus/mbppplus: task_id, prompt, code, test_list (examples), test_imports, test (plus assertions)."""
    out = []
    for r in read_rows(files):
        example = (r.get("test_list") or [""])[0]
        text = f"{r['prompt']}\nYour code should pass this test:\n{example}{CODE_SUFFIX}"
        imports = r.get("test_imports") or []
        out.append(Sample(id=str(r["task_id"]), messages=user(text), answer=None, domain="mbppplus",
                          meta={"tests": "\n".join(imports) + "\n" + str(r["test"])}))
    return out


def score_mbppplus(response, s):
    from uniopd_mm.verifiers import extract_code
    from uniopd_mm.verifiers.sandbox import run_program

    code = extract_code(response)
    return float(code is not None and run_program(f"{code}\n\n{s.meta['tests']}\n", timeout=20.0, cpu_seconds=20).ok)


class _PlainUnpickler(pickle.Unpickler):
    """LiveCodeBench stores private tests as base64(zlib(pickle(json string))): only plain values load."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test-case blob")


def lcb_tests(value) -> list[dict]:
    if not value:
        return []
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        raw = _PlainUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
        return json.loads(raw)


def load_livecodebench(files, media):
    """livecodebench/code_generation_lite (test*.jsonl): question_id, question_title, question_content,
    starter_code, public_test_cases and private_test_cases ([{input, output, testtype}] as JSON, the
    private ones possibly as base64/zlib/pickle), metadata (JSON with func_name for functional tests),
    platform, difficulty, contest_date."""
    out = []
    for r in read_rows(files):
        tests = lcb_tests(r.get("public_test_cases")) + lcb_tests(r.get("private_test_cases"))
        meta = json.loads(r["metadata"]) if isinstance(r.get("metadata"), str) and r["metadata"] else (r.get("metadata") or {})
        starter = r.get("starter_code") or ""
        text = str(r["question_content"])
        if starter:
            text += f"\nUse this starter code:\n```python\n{starter}\n```"
        else:
            text += "\nRead the input from stdin and write the answer to stdout."
        out.append(Sample(id=str(r["question_id"]), messages=user(text + CODE_SUFFIX), answer=None, domain="livecodebench",
                          meta={"lcb_tests": tests, "func_name": meta.get("func_name"),
                                "difficulty": r.get("difficulty"), "contest_date": str(r.get("contest_date", ""))}))
    return out


def score_livecodebench(response, s):
    """All tests must pass: stdin tests compare whitespace-split stdout; functional tests call
    ``Solution().<func_name>(*args)`` on the JSON arguments (one per input line) and compare the JSON."""
    from uniopd_mm.verifiers import extract_code
    from uniopd_mm.verifiers.sandbox import run_program

    code = extract_code(response)
    if code is None or not s.meta["lcb_tests"]:
        return 0.0
    for t in s.meta["lcb_tests"]:
        if t.get("testtype") == "functional":
            harness = (f"{code}\n\nimport json as _j, sys as _s\n_a = [_j.loads(x) for x in _s.stdin.read().splitlines() if x.strip()]\n"
                       f"print(_j.dumps(Solution().{s.meta['func_name']}(*_a)))\n")
            res = run_program(harness, stdin=t["input"], timeout=10.0, cpu_seconds=10)
            try:
                ok = res.ok and json.loads(res.stdout.strip().splitlines()[-1]) == json.loads(t["output"])
            except (ValueError, IndexError):
                ok = False
        else:
            res = run_program(code, stdin=t["input"], timeout=10.0, cpu_seconds=10)
            ok = res.ok and res.stdout.split() == str(t["output"]).split()
        if not ok:
            return 0.0
    return 1.0


# -- synthetic -------------------------------------------------------------------------------------------
def load_synthetic(files, media):
    """Our synthetic test split (``scripts/make_synthetic_data.py``): test.jsonl in the sample schema."""
    test = [f for f in files if f.name == "test.jsonl"] or files
    return load_jsonl(test[0])


def score_synthetic(response, s):
    from uniopd_mm.verifiers import verify

    return float(verify(s, response) is True)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    # lmms-eval 0.7.3's tasks, their prompts, scoring and max_new_tokens: mathvision_test (MATH-V's rules), the
    # reasoning variants for DynaMath / WeMath / LogicVista (<answer> tag, rule-based), and visulogic
    Benchmark("mathvision", "MathLLMs/MathVision (test or testmini Parquet)", ["**/*.parquet", "*.jsonl", "*.json"],
              load_mathvision, lambda r, s: official.mathvision(r, s.answer, s.meta["options"]), "mm-math",
              max_new_tokens=16384, lenient=lenient_mathvision),
    Benchmark("dynamath", "kcz358/DynaMath (Parquet), or DynaMath/DynaMath_Sample's sample_variant*.parquet",
              ["**/*.parquet", "*.jsonl", "*.json"], load_dynamath, lambda r, s: official.reasoning(r, s.answer), "mm-math",
              max_new_tokens=49152, lenient=lenient_dynamath, aggregate=dynamath_aggregate),
    Benchmark("wemath", "We-Math/We-Math (testmini Parquet, or testmini.json with the images)",
              ["**/*.parquet", "*.json", "*.jsonl"], load_wemath, lambda r, s: official.reasoning(r, s.answer), "mm-math",
              max_new_tokens=49152, lenient=lambda r, s: scorers.choice(r, s.answer), aggregate=wemath_aggregate),
    Benchmark("logicvista", "lscpku/LogicVista (Parquet), or the GitHub release's data/dataset.json and data/images/",
              ["**/*.parquet", "**/dataset.json", "*.jsonl"], load_logicvista, lambda r, s: official.reasoning(r, s.answer),
              "logic", max_new_tokens=49152, lenient=lambda r, s: scorers.choice_set(r, s.answer)),
    Benchmark("visulogic", "VisuLogic/VisuLogic (data.jsonl with images.zip or images/)", ["*.jsonl", "**/*.parquet"],
              load_visulogic, lambda r, s: official.visulogic(r, s.answer), "logic", max_new_tokens=64,
              lenient=lambda r, s: scorers.choice(r, s.answer)),
    # max_new_tokens as lmms-eval's tasks: 16 for AI2D and ChartQA, 32 for DocVQA and InfographicVQA
    Benchmark("ai2d", "lmms-lab/ai2d (test Parquet)", ["**/*.parquet"], load_ai2d,
              lambda r, s: scorers.lmms_eval_choice(r, s.answer), "documents", max_new_tokens=16,
              lenient=lambda r, s: scorers.choice(r, s.answer, s.meta["options"])),
    # the raw response, scored as lmms-eval does (pix2struct's relaxed correctness; the RRC script's ANLS)
    Benchmark("chartqa", "lmms-lab/ChartQA (test Parquet)", ["**/*.parquet"], load_chartqa,
              lambda r, s: scorers.relaxed_accuracy(r, s.answer), "documents", max_new_tokens=16,
              lenient=lambda r, s: scorers.relaxed_accuracy(scorers.short_answer(r).replace(" ", ""), s.answer)),
    Benchmark("docvqa", "lmms-lab/DocVQA, config DocVQA (validation Parquet)", ["**/*.parquet"], load_docvqa,
              lambda r, s: scorers.anls(r, s.meta["answers"]), "documents", max_new_tokens=32,
              lenient=lambda r, s: scorers.anls(scorers.short_answer(r), s.meta["answers"])),
    Benchmark("infovqa", "lmms-lab/DocVQA, config InfographicVQA (validation Parquet)", ["**/*.parquet"],
              lambda f, m: load_docvqa(f, m, "infovqa"),
              lambda r, s: scorers.anls(r, s.meta["answers"]), "documents", max_new_tokens=32,
              lenient=lambda r, s: scorers.anls(scorers.short_answer(r), s.meta["answers"])),
    Benchmark("aime24", "HuggingFaceH4/aime_2024 (Parquet) or any JSONL with problem/answer", ["**/*.parquet", "*.jsonl"],
              load_math_text("aime24"), lambda r, s: scorers.math(r, s.answer), "math", n=32, temperature=1.0,
              max_new_tokens=32768),
    Benchmark("aime25", "math-ai/aime25 or opencompass/AIME2025 (JSONL / Parquet)", ["**/*.parquet", "*.jsonl"],
              load_math_text("aime25"), lambda r, s: scorers.math(r, s.answer), "math", n=32, temperature=1.0,
              max_new_tokens=32768),
    Benchmark("hmmt25_feb", "MathArena/hmmt_feb_2025 (Parquet)", ["**/*.parquet", "*.jsonl"], load_math_text("hmmt25_feb"),
              lambda r, s: scorers.math(r, s.answer), "math", n=32, temperature=1.0, max_new_tokens=32768),
    Benchmark("hmmt25_nov", "MathArena/hmmt_nov_2025 (Parquet)", ["**/*.parquet", "*.jsonl"], load_math_text("hmmt25_nov"),
              lambda r, s: scorers.math(r, s.answer), "math", n=32, temperature=1.0, max_new_tokens=32768),
    Benchmark("humanevalplus", "evalplus/humanevalplus (Parquet) or HumanEvalPlus.jsonl", ["**/*.parquet", "*.jsonl"],
              load_humanevalplus, score_humanevalplus, "code", n=4, temperature=1.0, max_new_tokens=4096),
    Benchmark("mbppplus", "evalplus/mbppplus (Parquet) or MbppPlus.jsonl", ["**/*.parquet", "*.jsonl"], load_mbppplus,
              score_mbppplus, "code", n=4, temperature=1.0, max_new_tokens=4096),
    Benchmark("livecodebench", "livecodebench/code_generation_lite v6 (test*.jsonl)", ["*.jsonl"], load_livecodebench,
              score_livecodebench, "code", n=4, temperature=1.0, max_new_tokens=16384),
    Benchmark("synthetic", "scripts/make_synthetic_data.py --out DATA_DIR/synthetic (test.jsonl)", ["test.jsonl"],
              load_synthetic, score_synthetic, "synthetic", max_new_tokens=48),
]}
