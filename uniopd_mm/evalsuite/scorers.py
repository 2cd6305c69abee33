"""Per-benchmark metrics as pure functions of (response, reference): each returns a score in [0, 1].

- ``anls``: Average Normalized Levenshtein Similarity as the DocVQA / InfographicVQA (RRC) script and
  lmms-eval compute it (DocVQA, InfoVQA; threshold 0.5).
- ``relaxed_accuracy``: ChartQA's relaxed correctness as pix2struct / lmms-eval compute it.
- ``lmms_eval_choice``: AI2D's letter match as lmms-eval 0.7.3 computes it.
- ``choice``: the option letter a response picks (``verifiers.extract.choice_letter``, lenient), compared
  with the gold letter; ``choice_set``: several letters ("A, C"), compared as sets (LogicVista).
- ``math``: the final answer (boxed first) equal to the reference under math-verify.
- ``short_answer``: the lenient extraction (a boxed / <answer> answer, else the last line without
  "Answer:"); benchmarks apply it only with ``--lenient``, reported under their own name.
"""

from __future__ import annotations

import re
import string

from rapidfuzz.distance import Levenshtein

from uniopd_mm.verifiers import verify_math
from uniopd_mm.verifiers.extract import choice_letter, final_answer


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """ANLS of one prediction, as the RRC DocVQA script (and lmms-eval's ``anls`` metric) computes it:

        NL(a) = edit distance(norm(a), norm(pred)) / max(len(a), len(pred))     norm: strip, lower, collapse spaces
        score = 1 - min_a NL(a), set to 0 when it falls below ``threshold``

    The lengths are the raw strings' (before normalisation); NL = 0.5 scores 0.5; nothing is stripped from the
    prediction beyond surrounding spaces (a trailing "." counts as a character).
    """
    pred = " ".join(prediction.strip().lower().split())
    distances = []
    for answer in answers:
        answer = str(answer)
        gold = " ".join(answer.strip().lower().split())
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(0.0 if length == 0 else Levenshtein.distance(gold, pred) / length)
    if not distances:
        return 0.0
    score = 1.0 - min(distances)
    return score if score >= threshold else 0.0


def _pix2struct_float(text: str) -> float | None:
    """pix2struct's ``_to_float``: ``float(text)``, or a percentage divided by 100; None otherwise."""
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> float:
    """ChartQA's relaxed correctness as pix2struct (and lmms-eval's ``relaxed_correctness``) computes it:
    when both parse as floats and the target is non-zero, |pred - target| / |target| <= 5%; otherwise the
    lowercased strings must be equal (so a target of 0 needs the same string). No spaces, "$" or "," are
    removed: "2 0" is not 20."""
    pred, gold = _pix2struct_float(prediction), _pix2struct_float(target)
    if pred is not None and gold:
        return float(abs(pred - gold) / abs(gold) <= tolerance)
    return float(prediction.lower() == target.lower())


def short_answer(response: str) -> str:
    """The answer part of a short-answer response: a boxed / <answer> answer if present, else the last
    non-empty line without a leading "Answer:"."""
    if "\\boxed" in response or "<answer>" in response:
        ans = final_answer(response)
        if ans:
            return ans
    lines = [ln.strip() for ln in response.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return re.sub(r"^(?:final\s+)?answer\s*[:：]\s*", "", last, flags=re.I).strip().rstrip(".")


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def lmms_eval_choice(response: str, gold: str) -> float:
    """AI2D as lmms-eval 0.7.3 scores it: its filter takes the letter when the response starts with "X." (after
    spaces), else keeps the whole response; then ``exact_match`` with case and ASCII punctuation ignored. So
    "B", "B.", "(B)" and "[B]" score, while "The answer is B" and "B is right" do not, nor a trailing space."""
    m = re.match(r"^\s*([A-Z])\.", response)
    pred = m.group(1) if m else response
    return float(pred.lower().translate(_PUNCTUATION) == gold.lower().translate(_PUNCTUATION))


def choice(response: str, gold: str, options: list[str] | None = None) -> float:
    pred = choice_letter(response, options)
    return float(pred is not None and pred == gold.strip().upper())


def letters(text: str) -> set[str]:
    """Option letters named in a short answer such as "A, C" or "(B) and (D)"."""
    return set(re.findall(r"(?<![A-Za-z])([A-H])(?![A-Za-z])", text.upper()))


def choice_set(response: str, gold: str) -> float:
    ans = final_answer(response) if ("\\boxed" in response or "<answer>" in response) else short_answer(response)
    pred = letters(ans or "")
    return float(bool(pred) and pred == letters(gold))


def math(response: str, gold: str) -> float:
    return float(verify_math(response, str(gold)) is True)
