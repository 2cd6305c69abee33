"""Scorers that reproduce lmms-eval 0.7.3's rule-based tasks for the math and logic benchmarks, rule for rule,
so that scores are comparable with published LMMs-Eval tables (``tests/eval/test_lmms_eval_parity.py`` runs
lmms-eval's own code on the same predictions).

- :func:`mathvision` -- ``mathvision_test`` (``mathvision_process_results``): MATH-V's rule-based evaluator
  (``evaluation/evaluate.py`` and its ``utils.py``): a few phrase and letter rules pick the answer, the last
  ``\\boxed{}`` is cleaned (units, ``\\left``, degrees, ``=``, ``\\approx``), then it equals the gold answer or
  the gold option's text as a lowercased string, element-wise in a tuple, or as a number rounded to 2 decimals
  after LaTeX parsing. The parser is latex2sympy2_extended (math-verify's) where MATH-V uses latex2sympy2
  1.9.1; a parsed expression counts as a number only when its printed form is plain arithmetic on numerals
  (MATH-V evaluates that printed form with Python's ``eval`` and no names in scope, so ``2*sqrt(3)`` or ``pi``
  never compare as numbers there either).
- :func:`reasoning` -- the reasoning variants that lmms-eval 0.7.3 ships for WeMath, LogicVista and DynaMath
  (and MathVision's ``mathvision_reason_*``): ``_task_utils/reasoning_utils.compute_score``'s ``acc_score``
  with its LLM judge off (lmms-eval's default, ``USE_LLM_JUDGE=False``): the ``<answer>`` tag, else the last
  ``\\boxed{}``, else the last number ending a line; then its multiple-choice letter parser when the gold
  answer is a letter, a relaxed containment match, and math-verify.
- :func:`visulogic` -- the ``visulogic`` task's letter patterns (``<answer>(X)</answer>``, ``\\boxed{X}``,
  "answer is X", "option X", "(X)"; else a reply of at most 3 characters starting with the letter).
- :func:`wemath_four_way` and :func:`dynamath_variants` -- the aggregate scores: We-Math's loose and strict
  scores over its 2- and 3-step problems, DynaMath's average and worst case over question variants.
"""

from __future__ import annotations

import ast
import operator
import re

# -- MathVision (MATH-V's rule-based evaluator) ------------------------------------------------------------


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
          ast.USub: operator.neg, ast.UAdd: operator.pos}


def _arith(node):
    """The value of printed arithmetic on numerals (what MATH-V's name-less ``eval`` can compute); raises otherwise."""
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_arith(node.operand))
    raise ValueError("not plain arithmetic")


def _latex_value(text: str):
    """round(value, 2) of a LaTeX string that parses to plain arithmetic; raises when it does not."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    expr = latex2sympy(text)
    if isinstance(expr, sympy.Basic):  # decimals as exact rationals, as latex2sympy2 reads them ("3.0" prints "3")
        expr = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
    return round(_arith(ast.parse(str(expr), mode="eval")), 2)


def _eval_tuple(s: str) -> str:
    """"(a,b)" / "[a,b]" with each element replaced by its value rounded to 2 decimals ("infty", "a", "-a" kept);
    the string unchanged when it is not such a tuple or an element does not evaluate."""
    parts = s[1:-1].split(",")
    if len(s) < 2 or len(parts) < 2 or (s[0], s[-1]) not in (("(", ")"), ("[", "]")):
        return s
    try:
        values = [p if "infty" in p or p in ("a", "-a") else str(_latex_value(p)) for p in parts]
    except Exception:
        return s
    return s[0] + ",".join(values) + s[-1]


def _equal(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if not a.replace(" ", "") or not b.replace(" ", ""):
        return False
    if a.strip() == b.strip():
        return True
    a, b = _eval_tuple(a), _eval_tuple(b)
    if a == b:
        return True
    try:
        return _latex_value(a) == _latex_value(b)
    except Exception:
        return False


def _fix_fracs(s: str) -> str:
    """"\\frac12" -> "\\frac{1}{2}", "\\frac1{2}" -> "\\frac{1}{2}"."""
    head, *rest = s.split("\\frac")
    out = head
    for sub in rest:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
        elif len(sub) < 2:
            return s
        elif sub[1] != "{":
            out += "{" + sub[0] + "}{" + sub[1] + "}" + sub[2:]
        else:
            out += "{" + sub[0] + "}" + sub[1:]
    return out


def _fix_sqrt(s: str) -> str:
    """"\\sqrt3" -> "\\sqrt{3}"."""
    head, *rest = s.split("\\sqrt")
    return head + "".join("\\sqrt{" + sub[0] + "}" + sub[1:] if sub and sub[0] != "{" else "\\sqrt" + sub for sub in rest)


def _fix_slash(s: str) -> str:
    """"3/4" (integers, written plainly) -> "\\frac{3}{4}"."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def _strip(s: str) -> str:
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("$", "")):
        s = s.replace(old, new)
    s = s.split("\\text{ ")[0]  # units on the right
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2:
        s = s.split("=")[-1]
    if len(s.split("\\approx")) == 2:
        s = s.split("\\approx")[-1]
    if "sqrt" in s:
        s = _fix_sqrt(s)
    s = s.replace(" ", "")
    if "sqrt" in s:  # MATH-V fixes fractions only here
        s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_slash(s)


def _math_answer(s: str) -> str:
    """MATH-V's ``find_math_answer``: the last boxed content (else the whole text), cleaned."""
    s = s.lower().replace("{}", "")
    boxed = re.findall("oxed{(.*)}", s, flags=re.S)
    ans = boxed[-1] if boxed else s
    if "}" in ans and ("{" not in ans or ans.find("}") < ans.find("{")):
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1].split("\\approx")[-1]
    for old, new in ((" ", ""), ("\\,", ""), ("∞", "\\infty"), ("+\\infty", "\\infty"), ("\\\\", "\\"), ("\n", ""),
                     ("\\text", ""), ("\\mbox", ""), ("bmatrix", "pmatrix"), ("\\left", ""), ("\\right", ""),
                     ("^{\\circ}", ""), ("^\\circ", ""), ("{m}^3", ""), ("m^3", ""), ("{units}", ""), ("units", ""),
                     ("{km}", ""), ("km", "")):
        ans = ans.replace(old, new)
    return _strip(ans)


_PHRASES = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


def mathvision(response: str, gold: str, options: list[str] | None = None) -> float:
    """1.0 when MATH-V's rules find ``gold`` (a letter for multiple choice, else a value) in ``response``."""
    answer = response.strip()
    gold_text = options[ord(gold) - ord("A")] if options else ""
    for c in "ABCDE":
        if (answer.endswith(f" {c}.") or answer.endswith(f" ({c}).") or answer.startswith(f"{c}\n")
                or answer.startswith(f"({c})\n") or answer.startswith(f"({c}) {c}\n")):
            answer = c
    if _is_number(answer.split("is ")[-1].rstrip(".")):
        answer = answer.split("is ")[-1].rstrip(".")
    if "oxed{" not in answer:
        for phrase in _PHRASES:
            for flag in (phrase, phrase.replace("the", "The")):
                found = flag in answer
                answer = answer.split(flag)[-1].strip()
                if found:
                    answer = answer.split("\n")[0].split(". ")[0]
    elif answer.count("oxed{") > 1:
        answer = "\\boxed{" + answer.split("oxed{")[-1]
    answer = _math_answer(answer)
    for c in "abcde":
        answer = answer.replace(f"({c})", c)
    for c in "abcde":
        answer = answer.replace(f"{{{c}}}", c)
    answer = answer.rstrip(".").lstrip(":").strip()
    return float(_equal(gold, answer) or _equal(gold_text, answer))


# -- the reasoning variants (WeMath, LogicVista, DynaMath) -----------------------------------------------------

def _last_boxed(text: str) -> str:
    """The content of the last ``\\boxed{...}`` whose braces close."""
    found = ""
    for start in [m.start() for m in re.finditer(re.escape("\\boxed{"), text)]:
        depth = 0
        for pos in range(start + len("\\boxed"), len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start + len("\\boxed{"):pos]
                    break
    return found


def answer_tag(text: str) -> str:
    """The first ``<answer>`` tag's content, else the last boxed answer, else the last number ending a line."""
    m = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if m:
        return m.group(1)
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    for line in reversed(text.strip().split("\n")):
        if line.strip():
            m = re.search(r"\b(\d+(?:\.\d+)?)\b(?:\s*\.?\s*$)", line)
            if m:
                return m.group(1)
    return ""


_LETTERS = "ABCDEFGH"
_MARKS = [("(", ")", 6), ("", ".", 5), ("", ":", 4), ("", ")", 3), ("", " ", 2), ("", "-", 1), ("", "_", 1), ("", "=", 1)]
_ANSWER_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is", "the answer", "answer",
                   "correct answer", "the correct answer", "the best answer is", "best answer is", "the best answer",
                   "best answer", "the option is", "option is", "the correct option is", "correct option is",
                   "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
                   "i pick", "my answer is", "my choice is")


def mcq_letter(text: str) -> str:
    """lmms-eval's ``parse_mcq``: candidate letters from marked forms ("(A)", "A.", "A:", "A)", "A "...), answer
    phrases, the start and the end of the text; the best by form priority, then the earliest; "" when none."""
    if not text or not text.strip():
        return ""
    response = text.strip()
    for ch in ",.!?;:'\"":
        response = response.strip(ch)
    response = f" {response} "
    lower = response.lower()
    found = []  # (priority, position, letter)
    for pre, post, priority in _MARKS:
        found += [(priority, response.rfind(f"{pre}{c}{post}"), c) for c in _LETTERS if f"{pre}{c}{post}" in response]
    for phrase in _ANSWER_PHRASES:
        if phrase in lower:
            start = lower.find(phrase)
            found += [(7, response.find(c, start), c) for c in _LETTERS if response.find(c, start) != -1]
    found += [(10, 0, c) for c in _LETTERS if response.strip().startswith(c)]
    found += [(9, len(response) - 1, c) for c in _LETTERS if response.strip().endswith(c)]
    found += [(8, response.rfind(f"{i + 1}. {c}"), c) for i, c in enumerate(_LETTERS) if f"{i + 1}. {c}" in response]
    if not found:
        found = [(0, response.rfind(c), c) for c in _LETTERS if c in response]
    if not found:
        return ""
    return max(found, key=lambda f: (f[0], -f[1]))[2]


def _drop_period(s: str) -> str:
    return (s[:-1] if s.endswith(".") else s).strip()


def reasoning(response: str, gold: str) -> float:
    """``compute_score(...)["acc_score"]`` of lmms-eval's reasoning tasks with the LLM judge off."""
    pred, gold = _drop_period(answer_tag(response.strip()).strip()), _drop_period(str(gold))
    if mcq_letter(gold) in tuple(_LETTERS):  # a letter, not the empty string
        if mcq_letter(pred).lower().strip() == mcq_letter(gold).lower().strip():
            return 1.0
    elif ((pred in gold and len(pred) >= 0.9 * len(gold)) or (gold in pred and len(gold) >= 0.9 * len(pred))
          or pred.strip() == gold.strip()):
        return 1.0
    try:
        from math_verify import parse, verify

        return float(int(verify(parse(gold), parse(pred))))
    except Exception:
        return 0.0


REASONING_SYSTEM_PROMPT = (
    "You are a helpful assistant. When the user asks a question, your response must include two parts: "
    "first, the reasoning process enclosed in <think>...</think> tags, then the final answer enclosed in "
    "<answer>...</answer> tags.Please provide a clear, concise response within <answer> </answer> tags that "
    "directly addresses the question.")


# -- VisuLogic -------------------------------------------------------------------------------------------------

_VISULOGIC = [re.compile(r"<answer>\s*\(?([A-D])\)?\s*</answer>", re.I | re.S), re.compile(r"\\boxed\{\s*([A-D])\s*\}", re.I),
              re.compile(r"answer\s*(?:is|:|-)\s*\(?([A-D])\)?\b", re.I), re.compile(r"option\s*([A-D])\b", re.I),
              re.compile(r"\(([A-D])\)", re.I)]


def visulogic(response: str, gold: str) -> float:
    text = str(response).strip()
    letter = ""
    for pattern in _VISULOGIC:
        hits = pattern.findall(text)
        if hits:
            letter = hits[-1].upper()
            break
    else:
        if text and len(text) <= 3 and text.upper()[0] in "ABCD":
            letter = text.upper()[0]
    return float(letter == str(gold).strip().upper()[:1])


# -- aggregate scores ----------------------------------------------------------------------------------------

def wemath_four_way(items: list[tuple[str, str, float]]) -> dict:
    """We-Math's four-way evaluation from (problem ID, key, score) triples; key is "2steps_1", "2steps_2",
    "2steps_multi", "3steps_1".. "3steps_multi"; an item counts as right when its score is 1.

    Per composite problem (its step-1 item present): IK = some step wrong and the composite wrong; IG = every
    step right, the composite wrong; CM = the composite right with every step right (strict) or any (loose);
    RM = the composite right with some step wrong (strict) or every step wrong (loose). A part that is missing
    counts as neither right nor wrong. Score = (N - IG/2 - RM - IK) / N, N = the composite problems (525 in
    testmini, which lmms-eval hard-codes)."""
    right: dict[tuple[str, str], bool] = {}
    for pid, key, score in items:
        right[(str(pid), key)] = score == 1.0
    counts = {"IK": 0, "IG": 0, "CM_loose": 0, "CM_strict": 0, "RM_loose": 0, "RM_strict": 0}
    problems = 0
    for steps in (2, 3):
        for pid in sorted({p for p, k in right if k == f"{steps}steps_1"}):
            problems += 1
            parts = [right.get((pid, f"{steps}steps_{i}")) for i in range(1, steps + 1)]
            multi = right.get((pid, f"{steps}steps_multi"))
            all_right, all_wrong = all(p is True for p in parts), all(p is False for p in parts)
            some_wrong, some_right = any(p is False for p in parts), any(p is True for p in parts)
            counts["IK"] += some_wrong and multi is False
            counts["IG"] += all_right and multi is False
            counts["CM_loose"] += some_right and multi is True
            counts["CM_strict"] += all_right and multi is True
            counts["RM_loose"] += all_wrong and multi is True
            counts["RM_strict"] += some_wrong and multi is True
    if not problems:
        return {}
    base = problems - 0.5 * counts["IG"] - counts["IK"]
    return {"wemath_loose": (base - counts["RM_loose"]) / problems, "wemath_strict": (base - counts["RM_strict"]) / problems,
            "wemath_problems": problems, **{f"wemath_{k}": v for k, v in counts.items()}}


def dynamath_variants(items: list[tuple[str, float]]) -> dict:
    """DynaMath over (question group, score) pairs: the mean over groups of the mean (average) and of the minimum
    (worst case) score of the group's variants."""
    groups: dict[str, list[float]] = {}
    for group, score in items:
        groups.setdefault(str(group), []).append(score)
    if not groups:
        return {}
    return {"dynamath_average": sum(sum(v) / len(v) for v in groups.values()) / len(groups),
            "dynamath_worst": sum(min(v) for v in groups.values()) / len(groups), "dynamath_groups": len(groups)}
