"""Our benchmark scores against lmms-eval 0.7.3's own code on the same predictions: ChartQA
(``chartqa_process_results``), DocVQA / InfographicVQA (its ``anls``), AI2D (its filter, then ``exact_match``),
MathVision (``mathvision_process_results``: MATH-V's rules), the reasoning variants of WeMath / LogicVista /
DynaMath (``reasoning_utils.compute_score``), VisuLogic (``visulogic_process_results``), and the We-Math four-way
and DynaMath variant aggregates. lmms-eval lives in ``<venv>/lmms-eval-0.7.3`` and MATH-V's latex2sympy2 in
``<venv>/latex2sympy2-1.9.1`` (``make install`` puts both there with --no-deps, from requirements-parity.txt);
they run in their own interpreter (lmms_eval_verdicts.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uniopd_mm.data import Sample
from uniopd_mm.evalsuite.benchmarks import BENCHMARKS

PARITY = Path(sys.prefix) / "lmms-eval-0.7.3"
LATEX2SYMPY2 = Path(sys.prefix) / "latex2sympy2-1.9.1"

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


# MathVision: gold (letter with options, or a value) x response forms: letters in every dress, phrases, boxes (one,
# two, nested, unclosed), units, degrees, percentages, fractions, roots, decimals at the rounding edge, tuples
MV_GOLD = [("B", ["3", "5", "7", "9"]), ("A", ["$\\frac{1}{2}$", "1", "2", "3"]), ("E", ["a", "b", "c", "d", "10"]),
           ("0.5", []), ("12", []), ("3", []), ("-2", []), ("\\pi", []), ("2\\sqrt{3}", []), ("(1,2)", []),
           ("[0,1]", []), ("1000", []), ("3.14", []), ("\\frac{3}{4}", []), ("45", []), ("x+1", [])]
MV_PRED = ["B", "b", "(B)", "B.", "(B)\nbecause", "B\nso", "The answer is B.", "so the answer is (B).",
           "The answer is B", "Therefore the final answer is B. Done", "The correct answer is 5. Yes", "\\boxed{B}",
           "\\boxed{(B)}", "\\boxed{\\text{B}}", "\\boxed{5}", "the answer is 5", "I think it is C", "", "E", "\\boxed{10}",
           "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}", "\\boxed{0.50}", "\\boxed{.5}", "\\boxed{0.496}", "\\boxed{0.494}",
           "\\boxed{50\\%}", "\\boxed{x=0.5}", "\\boxed{\\dfrac12}", "\\boxed{\\approx 0.5}", "0.5", "the answer is 0.5",
           "\\boxed{12}", "\\boxed{12 \\text{ cm}}", "\\boxed{12^\\circ}", "\\boxed{12^{\\circ}}", "\\boxed{12 units}",
           "12 km", "The answer is 12.", "\\boxed{12}\\boxed{13}", "\\boxed{\\$12}", "\\boxed{12.004}", "\\boxed{11.996}",
           "twelve", "\\boxed{3\\times4}", "\\boxed{6+6}", "\\boxed{1,2}", "\\boxed{3.0}", "\\boxed{6/2}",
           "\\boxed{\\frac{6}{2}}", "\\boxed{-2}", "\\boxed{- 2}", "\\boxed{\\pi}", "\\boxed{3.14}", "\\boxed{3.1416}",
           "\\boxed{2\\sqrt{3}}", "\\boxed{2\\sqrt3}", "\\boxed{\\sqrt{12}}", "\\boxed{3.46}", "\\boxed{(1,2)}",
           "\\boxed{(1, 2)}", "\\boxed{(1.0,2)}", "\\boxed{(1,2.001)}", "\\boxed{[1,2]}", "\\boxed{[0,1]}", "\\boxed{[0, 1.0]}",
           "\\boxed{1,000}", "\\boxed{1000}", "\\boxed{10^3}", "\\boxed{\\frac{3}{4}}", "\\boxed{0.75}", "\\boxed{3/4}",
           "\\boxed{45^\\circ}", "\\boxed{45\\,^{\\circ}}", "\\boxed{x+1}", "\\boxed{1+x}", "\\boxed{\\{B\\}}",
           "\\boxed{\\left(1,2\\right)}", "The answer should be 12\nmore", "Answer: 12", "12", "\\boxed{12", "x = 12"]
# the reasoning variants: gold (letters, letter sets, values, words) x answer tags, boxes, bare numbers, letters
RS_GOLD = ["B", "A, C", "0.5", "12", "12 cm", "Yes", "3.14159", "\\frac{1}{2}", "D", "-3"]
RS_PRED = ["<think>x</think><answer>B</answer>", "<answer>(B) 4</answer>", "<answer>A</answer>", "I think it is C",
           "<answer>Because of D</answer>", "<answer>A, C</answer>", "<answer>C, A</answer>", "<answer>A</answer><answer>C</answer>",
           "so \\boxed{C}", "\\boxed{B}", "<answer>b</answer>", "<answer>The answer is B</answer>", "<answer>B.</answer>",
           "<answer> B </answer>", "<answer>1/2</answer>", "The slope is 0.5.", "<answer>0.49</answer>", "<answer>0.5</answer>",
           "<answer>\\frac{1}{2}</answer>", "<answer>12</answer>", "<answer>12 cm</answer>", "<answer>12 cm.</answer>",
           "value 12", "<answer>Yes</answer>", "<answer>yes</answer>", "<answer>3.1415</answer>", "<answer>3.14159.</answer>",
           "\\boxed{\\frac{1}{2}}", "<answer>D</answer>", "The answer is D.", "D", "(D)", "<answer>-3</answer>",
           "the value is -3", "\\boxed{-3}", "", "<answer></answer>", "\\boxed{\\boxed{12}}", "<answer>E</answer>",
           "I choose B", "<answer>H</answer>", "12.0", "<answer>x = 12</answer>"]
VL_PRED = ["C", "(C)", "C.", "c", "CD", "C)", "<answer>C</answer>", "<answer>(c)</answer>", "<answer> C </answer>",
           "\\boxed{C}", "\\boxed{ c }", "The answer is C", "answer: C", "Answer - C", "answer is (C)", "Option c is right",
           "option C.", "(A) or (C)", "I pick C", "C is the answer", "The answer is A, not (C)", "", "ABC", "D", "E",
           "<answer>A</answer> (C)", "\\boxed{A} answer: C", "The answer: (D)"]


@pytest.fixture(scope="module")
def lmms():
    """lmms-eval's verdicts on every case, from its own interpreter (lmms_eval_verdicts.py says why)."""
    import json
    import os
    import random
    import subprocess

    if not (PARITY / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval 0.7.3 is not in {PARITY}: `make install` puts it there (requirements-parity.txt)")
    if not (LATEX2SYMPY2 / "latex2sympy2.py").is_file():
        pytest.skip(f"latex2sympy2 1.9.1 is not in {LATEX2SYMPY2}: `make install` puts it there (requirements-parity.txt)")
    rng = random.Random(0)
    wemath = []  # 525 composite problems as testmini has (lmms-eval hard-codes the count), random right / wrong
    for pid in range(525):
        steps = 2 if pid < 300 else 3
        wemath += [[str(pid), f"{steps}steps_{k}", float(rng.random() < 0.6)] for k in [*range(1, steps + 1), "multi"]]
    cases = {"chartqa": [[t, p] for t, preds in CHART for p in preds],
             "anls": [[a, p] for a, preds in DOC for p in preds],
             "ai2d": [[g, p] for g, preds in AI2D for p in preds],
             "mathvision": [[g, o, p] for g, o in MV_GOLD for p in MV_PRED],
             "reasoning": [[g, p] for g in RS_GOLD for p in RS_PRED],
             "visulogic": [[g, p] for g in "ABCD" for p in VL_PRED],
             "wemath": wemath,
             "dynamath": [[str(q), float(rng.random() < 0.5)] for q in range(50) for _ in range(rng.randint(1, 10))]}
    script = str(Path(__file__).parent / "lmms_eval_verdicts.py")
    theirs = {}
    for mode, path in (("documents", [PARITY]), ("reasoning", [PARITY]), ("mathvision", [PARITY, LATEX2SYMPY2])):
        out = subprocess.run([sys.executable, script, mode], input=json.dumps(cases), capture_output=True, text=True,
                             timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))})
        assert out.returncode == 0, out.stderr[-3000:]
        theirs.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return cases, theirs


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


def agreement(pairs) -> tuple[float, list]:
    pairs = list(pairs)
    wrong = [p for p in pairs if p[-2] != p[-1]]
    return 1 - len(wrong) / len(pairs), wrong


def test_mathvision_equals_lmms_eval(lmms):
    """MATH-V's rules on 16 golds x 86 responses; the old scorer (letter, else math-verify) is --lenient."""
    cases, theirs = lmms
    mv = BENCHMARKS["mathvision"]
    rows = [(g, p, mv.score(p, Sample(id="m", messages=[], answer=g, meta={"options": o})), v)
            for (g, o, p), v in zip(cases["mathvision"], theirs["mathvision"], strict=True)]
    rate, wrong = agreement(rows)
    assert rate == 1.0, wrong[:20]
    old, _ = agreement((v, mv.lenient(p, Sample(id="m", messages=[], answer=g, meta={"options": o})) , v) for (g, o, p), v in
                       zip(cases["mathvision"], theirs["mathvision"]))
    assert old < 1.0 and sum(theirs["mathvision"]) >= 50  # the old scorer differs; the cases are not all zeros


@pytest.mark.parametrize("name", ["wemath", "logicvista", "dynamath"])
def test_reasoning_variants_equal_lmms_eval(lmms, name):
    cases, theirs = lmms
    rows = [(g, p, BENCHMARKS[name].score(p, Sample(id="r", messages=[], answer=g)), v)
            for (g, p), v in zip(cases["reasoning"], theirs["reasoning"], strict=True)]
    rate, wrong = agreement(rows)
    assert rate == 1.0, wrong[:20]


def test_visulogic_equals_lmms_eval(lmms):
    cases, theirs = lmms
    rows = [(g, p, BENCHMARKS["visulogic"].score(p, Sample(id="v", messages=[], answer=g)), v)
            for (g, p), v in zip(cases["visulogic"], theirs["visulogic"], strict=True)]
    rate, wrong = agreement(rows)
    assert rate == 1.0, wrong[:20]


def test_wemath_and_dynamath_aggregates_equal_lmms_eval(lmms):
    from uniopd_mm.evalsuite import official

    cases, theirs = lmms
    ours = official.wemath_four_way([tuple(x) for x in cases["wemath"]])
    assert ours["wemath_problems"] == 525
    # lmms-eval reports "57.43%"-style strings
    assert round(100 * ours["wemath_loose"], 2) == float(theirs["wemath"]["loose"].rstrip("%"))
    assert round(100 * ours["wemath_strict"], 2) == float(theirs["wemath"]["strict"].rstrip("%"))
    assert ours["wemath_loose"] != ours["wemath_strict"]
    dyn = official.dynamath_variants([tuple(x) for x in cases["dynamath"]])
    assert dyn["dynamath_average"] == pytest.approx(theirs["dynamath"]["average"], abs=1e-12)
    assert dyn["dynamath_worst"] == pytest.approx(theirs["dynamath"]["worst"], abs=1e-12)
