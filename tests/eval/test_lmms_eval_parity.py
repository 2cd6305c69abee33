"""Our ChartQA, DocVQA / InfographicVQA and AI2D scores against lmms-eval 0.7.3's own code on the same
predictions: its ``chartqa_process_results``, its ``anls`` metric, and AI2D's filter followed by its
``exact_match``. lmms-eval lives in ``<venv>/lmms-eval-0.7.3`` (``make install`` puts it there with
--no-deps, from requirements-parity.txt) and runs in its own interpreter (lmms_eval_verdicts.py)."""

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
    """lmms-eval's verdicts on every case, from its own interpreter (lmms_eval_verdicts.py says why)."""
    import json
    import os
    import subprocess

    if not (PARITY / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval 0.7.3 is not in {PARITY}: `make install` puts it there (requirements-parity.txt)")
    cases = {"chartqa": [[t, p] for t, preds in CHART for p in preds],
             "anls": [[a, p] for a, preds in DOC for p in preds],
             "ai2d": [[g, p] for g, preds in AI2D for p in preds]}
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "lmms_eval_verdicts.py")], input=json.dumps(cases),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(PARITY)})
    assert out.returncode == 0, out.stderr[-3000:]
    return cases, json.loads(out.stdout.strip().splitlines()[-1])


def test_chartqa_equals_lmms_eval(lmms):
    cases, theirs = lmms
    for (target, pred), verdict in zip(cases["chartqa"], theirs["chartqa"], strict=True):
        ours = BENCHMARKS["chartqa"].score(pred, Sample(id="c", messages=[], answer=target))
        assert ours == verdict, (pred, target, ours, verdict)
    assert len(theirs["chartqa"]) == sum(len(p) for _, p in CHART)


def test_docvqa_and_infovqa_anls_equal_lmms_eval(lmms):
    cases, theirs = lmms
    for name in ("docvqa", "infovqa"):
        for (answers, pred), verdict in zip(cases["anls"], theirs["anls"], strict=True):
            ours = BENCHMARKS[name].score(pred, Sample(id="d", messages=[], answer=answers[0], meta={"answers": answers}))
            assert ours == pytest.approx(verdict, abs=1e-12), (name, pred, answers, ours, verdict)


def test_ai2d_equals_lmms_eval(lmms):
    cases, theirs = lmms
    for (gold, pred), verdict in zip(cases["ai2d"], theirs["ai2d"], strict=True):
        ours = BENCHMARKS["ai2d"].score(pred, Sample(id="a", messages=[], answer=gold, meta={"options": ["a", "b", "c", "d"]}))
        assert ours == verdict, (pred, ours, verdict)
