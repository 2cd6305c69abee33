"""The math and logic scorers against verdicts worked by hand from lmms-eval 0.7.3's task code (MATH-V's rules for
MathVision, ``reasoning_utils.compute_score`` for the reasoning variants, VisuLogic's patterns, We-Math's four-way
score, DynaMath's variant aggregation). Each expected value below was derived from the official rules, step by
step, in the comment beside it; test_lmms_eval_parity.py then runs the official code itself on many more cases."""

from __future__ import annotations

import pytest

from uniopd_mm.evalsuite import official

OPTS = ["3", "5", "7", "9"]


@pytest.mark.parametrize("gold,options,pred,expected", [
    ("B", OPTS, "The answer is B.", 1.0),          # ends with " B." -> "B"; equal ignoring case
    ("B", OPTS, "(B)\nbecause 5", 1.0),            # starts with "(B)\n" -> "B"
    ("B", OPTS, "\\boxed{5}", 1.0),                # equals the gold option's text
    ("B", OPTS, "the answer is 5", 1.0),           # the text after the last "is " is a number
    ("B", OPTS, "I think it is C", 0.0),           # cleaned to "ithinkitisc"
    ("B", OPTS, "", 0.0),                          # blank never scores
    ("0.5", [], "\\boxed{\\frac{1}{2}}", 1.0),     # 1/2 and 0.5 round to 0.5
    ("0.5", [], "\\boxed{0.496}", 1.0),            # round(0.496, 2) == 0.5: two decimals are compared
    ("0.5", [], "\\boxed{0.494}", 0.0),
    ("12", [], "\\boxed{12^\\circ}", 1.0),         # degrees removed
    ("12", [], "\\boxed{12 \\text{ cm}}", 0.0),    # "\text" removed, "12{cm}" is not a number
    ("12", [], "The answer is 12.", 1.0),
    ("12", [], "\\boxed{6+6}", 1.0),               # arithmetic is evaluated
    ("12", [], "\\boxed{12}\\boxed{13}", 0.0),     # the last box
    ("3", [], "\\boxed{6/2}", 1.0),                # "6/2" -> \frac{6}{2} = 3
    ("\\pi", [], "\\boxed{3.14}", 0.0),            # pi prints as a name, never a number
    ("2\\sqrt{3}", [], "\\boxed{2\\sqrt{3}}", 1.0),  # equal strings
    ("2\\sqrt{3}", [], "\\boxed{3.46}", 0.0),      # 2*sqrt(3) is not plain arithmetic
    ("(1,2)", [], "\\boxed{(1, 2)}", 1.0),         # spaces removed
    ("(1,2)", [], "\\boxed{(1.0,2)}", 1.0),        # tuples compared element-wise after rounding
])
def test_mathvision_as_math_v(gold, options, pred, expected):
    assert official.mathvision(pred, gold, options) == expected


@pytest.mark.parametrize("gold,pred,expected", [
    ("B", "<think>x</think><answer>B</answer>", 1.0),
    ("B", "<answer>(B) 4</answer>", 1.0),          # "(B)" ranks above the other forms
    ("B", "<answer>A</answer>", 0.0),
    ("B", "I think it is C", 0.0),                 # no tag, box or final number: nothing extracted
    ("B", "<answer>Because of D</answer>", 1.0),   # the parser ranks a letter starting the text first
    ("A, C", "<answer>A</answer>", 1.0),           # a gold "A, C" parses as the letter A
    ("C", "so \\boxed{C}", 1.0),
    ("0.5", "<answer>1/2</answer>", 1.0),          # math-verify: 1/2 = 0.5
    ("0.5", "The slope is 0.5.", 1.0),             # the number ending the last line
    ("0.5", "<answer>0.49</answer>", 0.0),
    ("Yes", "<answer>yes</answer>", 0.0),          # the relaxed match is case-sensitive
    ("3.14159", "<answer>3.14159.</answer>", 1.0),  # one trailing "." dropped
])
def test_reasoning_variants_as_lmms_eval(gold, pred, expected):
    assert official.reasoning(pred, gold) == expected


@pytest.mark.parametrize("pred,expected", [
    ("C", 1.0), ("(C)", 1.0), ("C.", 1.0), ("c", 1.0), ("CD", 1.0),   # at most 3 characters: the first letter
    ("<answer>(c)</answer>", 1.0), ("\\boxed{C}", 1.0), ("The answer is C", 1.0), ("answer: C", 1.0),
    ("Option c is right", 1.0), ("(A) or (C)", 1.0),                    # the last "(X)"
    ("I pick C", 0.0), ("C is the answer", 0.0), ("The answer is A, not (C)", 0.0), ("", 0.0),
])
def test_visulogic_patterns(pred, expected):
    assert official.visulogic(pred, "C") == expected


def test_wemath_four_way_by_hand():
    items = [("1", "2steps_1", 1), ("1", "2steps_2", 1), ("1", "2steps_multi", 0),                        # IG
             ("2", "2steps_1", 0), ("2", "2steps_2", 1), ("2", "2steps_multi", 1),                        # RM strict, CM loose
             ("3", "3steps_1", 0), ("3", "3steps_2", 0), ("3", "3steps_3", 0), ("3", "3steps_multi", 1),  # RM both
             ("4", "2steps_1", 1), ("4", "2steps_2", 1), ("4", "2steps_multi", 1),                        # CM both
             ("9", "1step", 1)]                                                                           # not composite
    got = official.wemath_four_way(items)
    assert (got["wemath_problems"], got["wemath_IG"], got["wemath_IK"], got["wemath_RM_loose"], got["wemath_RM_strict"]) == (
        4, 1, 0, 1, 2)
    assert got["wemath_loose"] == pytest.approx((4 - 0.5 - 1) / 4) and got["wemath_strict"] == pytest.approx((4 - 0.5 - 2) / 4)


def test_dynamath_average_and_worst_case():
    got = official.dynamath_variants([("a", 1.0), ("a", 0.0), ("a", 1.0), ("b", 1.0), ("b", 1.0)])
    assert got["dynamath_average"] == pytest.approx((2 / 3 + 1) / 2) and got["dynamath_worst"] == pytest.approx(0.5)


def test_runner_reports_the_aggregate_scores(tmp_path):
    """A WeMath run through the runner: per-item scores from the reasoning scorer, the four-way score beside them."""
    import json
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from uniopd_mm.evalsuite.benchmarks import BENCHMARKS
    from uniopd_mm.evalsuite.report import write_report
    from uniopd_mm.evalsuite.runner import EvalSettings, run_benchmark

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    rows = [{"ID": pid, "key": key, "question": f"q{pid}{key}", "option": "A. 1; B. 2", "answer": "B",
             "image_path": str(tmp_path / "x.png")} for pid in ("1", "2") for key in ("2steps_1", "2steps_2", "2steps_multi")]
    (tmp_path / "data" / "wemath").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "wemath" / "testmini.parquet")
    right = {"1-2steps_1", "1-2steps_2", "2-2steps_multi"}  # problem 1: IG; problem 2: RM (loose and strict)

    class Rollout:
        def generate(self, prompts, params):
            return SimpleNamespace(prompt_index=list(range(len(prompts))),
                                   responses=["<answer>B</answer>" if p in right else "<answer>A</answer>" for p in prompts])

    processor = SimpleNamespace(encode_prompt=lambda s: s.id, decode=lambda r: r)
    res = run_benchmark(BENCHMARKS["wemath"], lambda n: Rollout(), processor, tmp_path / "data", tmp_path / "out",
                        EvalSettings(), progress=False)
    assert res["score"] == pytest.approx(3 / 6)
    agg = res["aggregates"]
    assert (agg["wemath_IG"], agg["wemath_RM_loose"], agg["wemath_RM_strict"]) == (1, 1, 1)
    assert agg["wemath_loose"] == pytest.approx((2 - 0.5 - 1) / 2) == agg["wemath_strict"]
    lines = write_report({"model": "m", "family": "f", "date": "d", "machine": "x", "benchmarks": {"wemath": res}}, tmp_path)
    assert "| &nbsp;&nbsp;wemath: wemath_loose | | 25.0 |" in lines
    assert json.loads(json.dumps(res))["aggregates"] == agg
