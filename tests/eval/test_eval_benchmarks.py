"""Benchmark loaders read fixtures written here in each dataset's published schema; scorers are checked
on hand-computed cases; an end-to-end eval of a tiny model writes its reports and resumes."""

from __future__ import annotations

import base64
import io
import json
import pickle
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from uniopd_mm.evalsuite import scorers
from uniopd_mm.evalsuite.benchmarks import BENCHMARKS, MissingData

ROOT = Path(__file__).resolve().parents[2]


def png_bytes(color=(255, 0, 0)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def img(color=(255, 0, 0)) -> dict:
    return {"bytes": png_bytes(color), "path": "x.png"}


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("benchmarks")
    write_parquet(d / "mathvision" / "data" / "test-00000-of-00001.parquet", [
        {"id": "1", "question": "<image1>\nWhich shape is red?", "options": ["circle", "square"], "image": "images/1.jpg",
         "decoded_image": img(), "answer": "B", "solution": None, "level": 2, "subject": "metric geometry"},
        {"id": "2", "question": "<image1>\nHow many sides?", "options": [], "image": "images/2.jpg",
         "decoded_image": img((0, 0, 255)), "answer": "4", "solution": None, "level": 1, "subject": "counting"}])
    write_parquet(d / "dynamath" / "sample_variant1.parquet", [
        {"id": "0", "question": "What is the slope?", "image": img(), "ground_truth": "0.5", "answer_type": "float",
         "subject": "algebra", "knowledge_level": "high school"},
        {"id": "1", "question": "Which? A: 1 B: 2", "image": img(), "ground_truth": "B",
         "answer_type": "multiple choice", "subject": "graph", "knowledge_level": "elementary"}])
    write_parquet(d / "wemath" / "testmini.parquet", [
        {"ID": "7", "split": "testmini", "knowledge concept": "Area", "question": "Find the area.",
         "option": "A. 2; B. 4; C. 8", "answer": "B", "image_path": img(), "key": "2steps_1", "question number": 1,
         "knowledge concept description": "..."}])
    (d / "logicvista" / "data" / "images").mkdir(parents=True)
    (d / "logicvista" / "data" / "images" / "q1.png").write_bytes(png_bytes())
    (d / "logicvista" / "data" / "dataset.json").write_text(json.dumps({
        "1": {"imagename": "q1.png", "question": "Which are red? A. x B. y C. z", "answer": "A, C",
              "reasoning": "...", "skill": ["spatial"]}}))
    (d / "visulogic" / "images").mkdir(parents=True)
    (d / "visulogic" / "images" / "00001.png").write_bytes(png_bytes())
    import zipfile

    with zipfile.ZipFile(d / "visulogic" / "images.zip", "w") as z:  # the release keeps its images in images.zip
        z.writestr("images/00002.png", png_bytes((0, 255, 0)))
    (d / "visulogic" / "data.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "00001", "question": "Pick one. A: a B: b C: c D: d", "image_path": "images/00001.png", "label": "C",
         "tag": "Quantitative Reasoning"},
        {"id": "00002", "question": "Which? A: a B: b C: c D: d", "image_path": "./images/00002.png", "label": "a",
         "tag": "Other"}]) + "\n")
    write_parquet(d / "ai2d" / "data" / "test-00000.parquet", [
        {"question": "Which part is the leaf?", "options": ["root", "leaf", "stem", "flower"], "answer": "1",
         "image": img()}])
    write_parquet(d / "chartqa" / "data" / "test-00000.parquet", [
        {"type": "human_test", "question": "What is the peak value?", "answer": "100", "image": img()}])
    write_parquet(d / "docvqa" / "data" / "validation-00000.parquet", [
        {"questionId": "337", "question": "What is the date?", "question_types": ["form"], "image": img(),
         "docId": 279, "ucsf_document_id": "xx", "ucsf_document_page_no": "1", "answers": ["May 1", "1 May"],
         "data_split": "val"}])
    write_parquet(d / "infovqa" / "data" / "validation-00000.parquet", [
        {"questionId": "98", "question": "How many?", "answers": ["12"], "answer_type": ["single span"],
         "image": img(), "image_url": "u", "operation/reasoning": ["count"], "ocr": "", "data_split": "val"}])
    write_parquet(d / "aime24" / "data" / "train-00000.parquet", [
        {"id": 60, "problem": "Compute 1/2 + 0.", "solution": "...", "answer": "1/2", "url": "u", "year": "2024"}])
    (d / "aime25").mkdir()
    (d / "aime25" / "test.jsonl").write_text(json.dumps({"id": "0", "problem": "What is 2+2?", "answer": "4"}) + "\n")
    for name in ("hmmt25_feb", "hmmt25_nov"):
        write_parquet(d / name / "data" / "train-00000.parquet", [
            {"problem_idx": 1, "problem": "Find x if x = 3.", "answer": "3", "problem_type": ["Algebra"]}])
    write_parquet(d / "humanevalplus" / "data" / "test-00000.parquet", [
        {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
         "canonical_solution": "    return a + b\n", "entry_point": "add",
         "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"}])
    write_parquet(d / "mbppplus" / "data" / "test-00000.parquet", [
        {"task_id": 2, "code": "def similar(a, b):\n    return set(a) & set(b)\n", "prompt": "Find the shared elements.",
         "source_file": "x", "test_imports": ["import math"], "test_list": ["assert similar((1, 2), (2, 3)) == {2}"],
         "test": "assert similar((1, 2), (2, 3)) == {2}\nassert similar((), (1,)) == set()\n"}])
    private = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(
        [{"input": "5 7\n", "output": "12\n", "testtype": "stdin"}])))).decode()
    (d / "livecodebench").mkdir()
    (d / "livecodebench" / "test6.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_title": "Sum", "question_content": "Read two integers and print their sum.", "platform": "atcoder",
         "question_id": "abc001_a", "contest_id": "abc001", "contest_date": "2025-02-01T00:00:00", "starter_code": "",
         "difficulty": "easy", "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
         "private_test_cases": private, "metadata": "{}"},
        {"question_title": "Twice", "question_content": "Return twice x.", "platform": "leetcode",
         "question_id": "1001", "contest_id": "w1", "contest_date": "2025-03-01T00:00:00",
         "starter_code": "class Solution:\n    def twice(self, x: int) -> int:\n        ",
         "difficulty": "easy", "public_test_cases": json.dumps([{"input": "3", "output": "6", "testtype": "functional"}]),
         "private_test_cases": json.dumps([{"input": "-2", "output": "-4", "testtype": "functional"}]),
         "metadata": json.dumps({"func_name": "twice"})}]) + "\n")
    return d


EXPECTED = {  # benchmark -> (records, first answer, has image)
    "mathvision": (2, "B", True), "dynamath": (2, "0.5", True), "wemath": (1, "B", True), "logicvista": (1, "A, C", True),
    "visulogic": (2, "C", True), "ai2d": (1, "B", True), "chartqa": (1, "100", True), "docvqa": (1, "May 1", True),
    "infovqa": (1, "12", True), "aime24": (1, "1/2", False), "aime25": (1, "4", False), "hmmt25_feb": (1, "3", False),
    "hmmt25_nov": (1, "3", False), "humanevalplus": (1, None, False), "mbppplus": (1, None, False),
    "livecodebench": (2, None, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_reads_the_published_schema(bench_dir, name):
    samples = BENCHMARKS[name].load_samples(bench_dir)
    count, answer, has_image = EXPECTED[name]
    assert len(samples) == count and samples[0].answer == answer
    assert bool(samples[0].images) == has_image
    for path in samples[0].images:
        assert Path(path).is_file()
    assert samples[0].messages[0]["content"][-1]["text"].strip()


def test_prompts_follow_the_documented_formats(bench_dir):
    ai2d = BENCHMARKS["ai2d"].load_samples(bench_dir)[0].messages[0]["content"][-1]["text"]
    assert ai2d == ("Which part is the leaf?\nA. root\nB. leaf\nC. stem\nD. flower\n"
                    "Answer with the option's letter from the given choices directly.")
    mv = BENCHMARKS["mathvision"].load_samples(bench_dir)  # lmms-eval's mathvision_test prompt, word for word
    assert mv[0].messages[0]["content"][-1]["text"] == (
        'Please solve the problem step by step and put your answer in one "\\boxed{}".<image1>\nWhich shape is red?\n'
        "Choices: A. circle\nB. square\nAnswer the question with the option's letter from the given choices directly.")
    assert mv[1].messages[0]["content"][-1]["text"].endswith('"\\boxed{}".<image1>\nHow many sides?')
    for name in ("wemath", "logicvista", "dynamath"):  # the reasoning variants: their system prompt, then the question
        messages = BENCHMARKS[name].load_samples(bench_dir)[0].messages
        assert messages[0]["role"] == "system" and "<answer>...</answer>" in messages[0]["content"][0]["text"]
    assert BENCHMARKS["wemath"].load_samples(bench_dir)[0].messages[1]["content"][-1]["text"] == (
        "Find the area.\nA. 2; B. 4; C. 8")
    vl = BENCHMARKS["visulogic"].load_samples(bench_dir)
    assert vl[0].messages[0]["content"][-1]["text"].endswith("D: d\nAnswer with the option letter only.")
    assert vl[1].answer == "A" and Path(vl[1].images[0]).is_file()  # read from images.zip
    lcb = BENCHMARKS["livecodebench"].load_samples(bench_dir)
    assert [len(s.meta["lcb_tests"]) for s in lcb] == [2, 2]  # public + the decoded private tests


def test_missing_data_names_the_files_and_the_place(tmp_path):
    with pytest.raises(MissingData) as err:
        BENCHMARKS["chartqa"].load_samples(tmp_path)
    assert "lmms-lab/ChartQA" in str(err.value) and str(tmp_path / "chartqa") in str(err.value)


# -- scorers by hand -----------------------------------------------------------------------------------------
# The verdicts of the official evaluators, worked by hand from their code: the RRC DocVQA script's ANLS (also
# lmms-eval's ``anls``) and pix2struct's ``relaxed_correctness`` (also lmms-eval's ChartQA). Where the scorer
# used before differed, the comment says what it gave.
@pytest.mark.parametrize("pred, answers, expected", [
    ("May 1", ["May 1"], 1.0),
    ("hellp", ["hello"], 0.8),             # 1 edit / 5 characters
    ("  The CAT ", ["the cat"], 1.0),      # case and outer spaces do not count
    ("abcd", ["abxy"], 0.5),               # NL = 2 / 4 = 0.5: 1 - NL is not below 0.5 (before: 0)
    ("abcde", ["abxde"], 0.8),
    ("xyz", ["abc", "xyw"], 2 / 3),        # the best reference counts
    ("Co.", ["Co."], 1.0),                 # nothing is stripped from the prediction (before: 0.667)
    ("Co", ["Co."], 2 / 3),                # 1 edit / 3
    ("A   B x", ["a b"], 1 - 2 / 7),       # distance on normalised strings (2), length of the raw ones (7)
    ("Answer: May 1", ["May 1"], 0.0),     # the raw response: 8 edits / 13 -> 0.385 < 0.5 (before: 1.0)
    ("", [""], 1.0),                       # no characters: the script's `0.0 if length == 0` gives NL 0
])
def test_anls_as_the_rrc_script(pred, answers, expected):
    assert scorers.anls(pred, answers) == pytest.approx(expected)


@pytest.mark.parametrize("pred, target, expected", [
    ("105", "100", 1.0), ("95", "100", 1.0), ("105.1", "100", 0.0), ("94.9", "100", 0.0),  # the 5% boundary
    ("1.05", "1", 0.0),    # |1.05 - 1| / 1 = 0.05000000000000004 in floats: past the boundary (before: 1.0)
    ("0", "0", 1.0), ("0.0", "0", 0.0),  # a zero target is compared as strings (before: 0.0 scored 1.0)
    ("12%", "0.12", 1.0), ("Yes", "yes", 1.0), ("No", "yes", 0.0),
    ("2 0", "20", 0.0), ("1,5", "15", 0.0), ("$20", "20", 0.0),  # nothing is removed (before: 1.0 each)
    (" 20", "20", 1.0),    # float() itself ignores surrounding spaces
])
def test_relaxed_accuracy_as_pix2struct(pred, target, expected):
    assert scorers.relaxed_accuracy(pred, target) == expected


def test_lenient_scoring_is_an_option_under_its_own_name():
    from uniopd_mm.evalsuite.runner import EvalSettings, result_name

    from uniopd_mm.data import Sample

    doc, chart = BENCHMARKS["docvqa"], BENCHMARKS["chartqa"]

    rec = Sample(id="1", messages=[], answer="May 1", meta={"answers": ["May 1"]})
    assert doc.score("Answer: May 1", rec) == 0.0 and doc.lenient("Answer: May 1", rec) == 1.0
    assert chart.score("2 0", Sample(id="2", messages=[], answer="20")) == 0.0
    assert chart.lenient("Answer: 2 0", Sample(id="2", messages=[], answer="20")) == 1.0
    assert result_name(doc, EvalSettings(lenient=True)) == "docvqa_lenient"
    assert result_name(doc, EvalSettings()) == "docvqa"
    assert result_name(BENCHMARKS["synthetic"], EvalSettings(lenient=True)) == "synthetic"  # no lenient variant
    assert (doc.max_new_tokens, chart.max_new_tokens, BENCHMARKS["ai2d"].max_new_tokens) == (32, 16, 16)


@pytest.mark.parametrize("response", ["B", "(B)", "B.", "Answer: B", "The answer is (B).", "\\boxed{B}", "**B**",
                                      "I think the answer is B", "leaf"])
def test_mcq_letter_variants(response):
    assert scorers.choice(response, "B", ["root", "leaf", "stem", "flower"]) == 1.0


@pytest.mark.parametrize("response", ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "so it is \\boxed{\\dfrac12}"])
def test_math_equivalences(response):
    assert scorers.math(response, "1/2") == 1.0 and scorers.math(response, "\\frac{1}{2}") == 1.0
    assert scorers.math(response, "0.25") == 0.0


def test_choice_sets_and_short_answers():
    assert scorers.choice_set("The answer: C and A", "A, C") == 1.0
    assert scorers.choice_set("A", "A, C") == 0.0
    assert scorers.short_answer("Looking at the chart...\nAnswer: 42.") == "42"
    assert scorers.short_answer("blah \\boxed{7}") == "7"


def test_code_scorers_run_in_the_sandbox(bench_dir):
    he = BENCHMARKS["humanevalplus"]
    s = he.load_samples(bench_dir)[0]
    assert he.score("```python\ndef add(a, b):\n    return a + b\n```", s) == 1.0
    assert he.score("```python\n    return a + b\n```", s) == 1.0     # a body completes the prompt
    assert he.score("```python\ndef add(a, b):\n    return a - b\n```", s) == 0.0
    mb = BENCHMARKS["mbppplus"]
    s = mb.load_samples(bench_dir)[0]
    assert mb.score("```python\ndef similar(a, b):\n    return set(a) & set(b)\n```", s) == 1.0
    assert mb.score("```python\ndef similar(a, b):\n    return set(a)\n```", s) == 0.0
    lcb = BENCHMARKS["livecodebench"]
    stdin, functional = lcb.load_samples(bench_dir)
    assert lcb.score("```python\na, b = map(int, input().split())\nprint(a + b)\n```", stdin) == 1.0
    assert lcb.score("```python\nprint(3)\n```", stdin) == 0.0          # passes the public test only
    assert lcb.score("```python\nclass Solution:\n    def twice(self, x):\n        return 2 * x\n```", functional) == 1.0
    assert lcb.score("```python\nclass Solution:\n    def twice(self, x):\n        return x + 3\n```", functional) == 0.0


def test_lcb_blobs_never_unpickle_objects():
    from uniopd_mm.evalsuite.benchmarks import lcb_tests

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError):
        lcb_tests(blob)


# -- end to end -----------------------------------------------------------------------------------------------
def test_eval_tiny_model_on_synthetic_writes_reports_and_resumes(tiny_dir, tmp_path):
    from uniopd_mm.synthetic import SyntheticSpec, generate

    data = tmp_path / "bench"
    generate(SyntheticSpec(n_train=4, n_test=6, domains=("shapes-color", "video-color"), levels=(0,)),
             data / "synthetic", progress=False)
    out = tmp_path / "student"

    def command(model, benchmarks, out_dir):
        return [sys.executable, str(ROOT / "eval" / "run.py"), "--model", str(tiny_dir / model), "--family", "qwen2_vl",
                "--benchmarks", benchmarks, "--data-dir", str(data), "--out", str(out_dir), "--quiet",
                "--max-new-tokens", "8", "--n", "2", "--temperature", "1.0", "--max-pixels", "50176"]

    cmd = command("qwen2_vl-student", "synthetic,chartqa", out)
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 1  # chartqa has no data: reported, the rest still runs
    assert "chartqa: no data" in first.stdout
    scores = json.loads((out / "scores.json").read_text())
    syn = scores["benchmarks"]["synthetic"]
    assert syn["items"] == 6 and syn["k"] == 2 and set(syn["domains"]) == {"shapes-color", "video-color"}
    preds = (out / "synthetic" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 6 and all(len(json.loads(p)["responses"]) == 2 for p in preds)
    assert (out / "report.png").stat().st_size > 1000 and "synthetic (avg@2)" in (out / "report.md").read_text()
    # a rerun finds every id scored and generates nothing new
    subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert (out / "synthetic" / "predictions.jsonl").read_text().splitlines() == preds
    # side by side with a second model
    out2 = tmp_path / "teacher"
    subprocess.run(command("qwen2_vl-teacher", "synthetic", out2), check=True, capture_output=True, cwd=ROOT)
    res = subprocess.run([sys.executable, str(ROOT / "eval" / "compare.py"), str(out), str(out2), "--labels",
                          "student,teacher", "--out", str(tmp_path / "cmp")], capture_output=True, text=True, check=True)
    assert "| benchmark | group | student | teacher |" in res.stdout
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


# -- opt-in download, against a stand-in hub on 127.0.0.1 (never the network) ----------------------------------
def test_download_fetches_resumes_and_says_when_offline(bench_dir, tmp_path, monkeypatch):
    from fake_hub import FakeHub

    from uniopd_mm.evalsuite.download import DownloadError

    files = {"data/test-00000.parquet": (bench_dir / "chartqa" / "data" / "test-00000.parquet").read_bytes(),
             "README.md": b"not wanted"}
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with FakeHub({"lmms-lab/ChartQA": files}) as hub:
        cmd = [sys.executable, str(ROOT / "eval" / "run.py"), "--download", "--benchmarks", "chartqa", "--data-dir",
               str(tmp_path / "data"), "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**env, "HF_ENDPOINT": hub.url})
        assert out.returncode == 0, out.stderr[-2000:]
        got = tmp_path / "data" / "chartqa" / "data" / "test-00000.parquet"
        assert got.read_bytes() == files["data/test-00000.parquet"]
        assert not (tmp_path / "data" / "chartqa" / "README.md").exists()  # only the files the loader reads
        samples = BENCHMARKS["chartqa"].load_samples(tmp_path / "data")
        assert [s.answer for s in samples] == ["100"]
        fetched = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
        assert len(fetched) == 1
        subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**env, "HF_ENDPOINT": hub.url}, check=True)
        assert [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]] == fetched  # kept, not fetched again
    # offline (nothing listens there any more) with nothing downloaded: a clear message, not a traceback
    out = subprocess.run(cmd[:-3] + ["--data-dir", str(tmp_path / "empty"), "--quiet"], capture_output=True, text=True,
                         cwd=ROOT, env={**env, "HF_ENDPOINT": hub.url})
    assert out.returncode == 0 and "chartqa: cannot reach the Hub for lmms-lab/ChartQA (offline?)" in out.stdout
    with pytest.raises(DownloadError, match="synthetic: no Hugging Face dataset"):
        from uniopd_mm.evalsuite.download import download

        download("synthetic", tmp_path / "data")
