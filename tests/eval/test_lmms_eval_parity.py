"""Our ChartQA, DocVQA / InfographicVQA and AI2D scores against lmms-eval 0.7.3's own code on the same
predictions: its ``chartqa_process_results``, its ``anls`` metric, and AI2D's filter followed by its
``exact_match``. lmms-eval lives in ``<venv>/lmms-eval-0.7.3`` (``make install`` puts it there with
--no-deps, from requirements-parity.txt); this module adds that folder to the path for its own use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uniopd_mm.data import Sample
from uniopd_mm.evalsuite.benchmarks import BENCHMARKS

PARITY = Path(sys.prefix) / "lmms-eval-0.7.3"

# predictions meant to find the edges: numbers, percentages, units, separators, spaces, case, punctuation,
# extraction prefixes, empty strings, the 5% boundary in floats, a zero target
CHART = [("100", ["100", "105", "95", "105.0000001", "94.99", "1e2", "100%", " 100", "100 ", "1,00", "$100", "100.",
                  "one hundred", "Answer: 100", "", "-100", "+100", "1 00"]),
         ("0", ["0", "0.0", "-0", "00", "0%", " 0", "zero"]),
         ("1", ["1.05", "0.95", "1.0500001", "1.04999", "105%", "1"]),
         ("12%", ["12%", "0.12", "12", "12.6%", "12.61%", "11.4%"]),
         ("Yes", ["yes", "YES", "Yes.", "yes ", "No", "y"]),
         ("2021", ["2021", "2,021", "2 021", "2021.0", "20.21e2", "2122"])]
DOC = [(["May 1"], ["May 1", "may 1", "May 1.", "May  1", " May 1 ", "Answer: May 1", "1 May", "", "May"]),
       (["Co."], ["Co.", "Co", "co.", "C.o.", "Company"]),
       (["hello", "hallo"], ["hellp", "hallp", "help", "hxllo", "HELLO WORLD"]),
       (["abcd"], ["abxy", "abxd", "xbcd", "ab", "abcdefgh"]),
       (["A   B x"], ["a b x", "a b", "A B X"])]
AI2D = [("B", ["B", "B.", "(B)", "[B]", "b", " B.", "B. leaves", "B is right", "The answer is B", "<answer>B</answer>",
               "**B**", "B ", "A", "A. B", "C.", "", "Answer: B"])]


@pytest.fixture(scope="module")
def lmms():
    if not (PARITY / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval 0.7.3 is not in {PARITY}: `make install` puts it there (requirements-parity.txt)")
    sys.path.insert(0, str(PARITY))
    try:
        from lmms_eval.api import metrics
        from lmms_eval.tasks.ai2d import utils as ai2d
        from lmms_eval.tasks.chartqa import utils as chartqa
    finally:
        sys.path.remove(str(PARITY))
    return metrics, chartqa, ai2d


def test_chartqa_equals_lmms_eval(lmms):
    _, chartqa, _ = lmms
    bench = BENCHMARKS["chartqa"]
    n = 0
    for target, preds in CHART:
        for pred in preds:
            theirs = chartqa.chartqa_process_results({"type": "human_test", "answer": target}, [pred])["relaxed_overall"]
            ours = bench.score(pred, Sample(id="c", messages=[], answer=target))
            assert ours == theirs, (pred, target, ours, theirs)
            n += 1
    assert n == sum(len(p) for _, p in CHART)


def test_docvqa_and_infovqa_anls_equal_lmms_eval(lmms):
    metrics, _, _ = lmms
    for name in ("docvqa", "infovqa"):
        for answers, preds in DOC:
            for pred in preds:
                theirs = metrics.anls(answers, [pred])["anls"]
                ours = BENCHMARKS[name].score(pred, Sample(id="d", messages=[], answer=answers[0],
                                                           meta={"answers": answers}))
                assert ours == pytest.approx(theirs, abs=1e-12), (name, pred, answers, ours, theirs)


def test_ai2d_equals_lmms_eval(lmms):
    metrics, _, ai2d = lmms
    f = ai2d.MultiChoiceRegexFilter(group_select=0, ignore_case=True, ignore_punctuation=True, regex_pattern=r"([A-Z])\.")
    for gold, preds in AI2D:
        for pred in preds:
            doc = {"options": ["a", "b", "c", "d"], "answer": "ABCD".index(gold)}
            filtered = f.apply([[pred]], [doc])[0]
            theirs = metrics.exact_match_hf_evaluate([filtered], [ai2d.ai2d_doc_to_target(doc, "mcq")], ignore_case=True,
                                                     ignore_punctuation=True)["exact_match"]
            ours = BENCHMARKS["ai2d"].score(pred, Sample(id="a", messages=[], answer=gold, meta={"options": doc["options"]}))
            assert ours == theirs, (pred, ours, theirs)
