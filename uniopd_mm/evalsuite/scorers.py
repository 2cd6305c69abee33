"""Per-benchmark metrics as pure functions of (response, reference): each returns a score in [0, 1].

- ``anls``: Average Normalized Levenshtein Similarity (DocVQA / InfoVQA; threshold 0.5), max over the
  reference answers, case-insensitive, whitespace-stripped.
- ``relaxed_accuracy``: ChartQA's relaxed correctness: numbers within 5% relative error of the target
  (exact when the target is 0), else case-insensitive string equality.
- ``choice``: the option letter a response picks (``verifiers.extract.choice_letter``), compared with the
  gold letter; ``choice_set``: several letters ("A, C"), compared as sets (LogicVista).
- ``math``: the final answer (boxed first) equal to the reference under math-verify.
"""

from __future__ import annotations

import re

from uniopd_mm.verifiers import verify_math
from uniopd_mm.verifiers.extract import choice_letter, final_answer, to_float


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """max over answers of 1 - NL(pred, ans), where NL = edit distance / max length; 0 when NL >= threshold."""
    pred = " ".join(prediction.strip().lower().split())
    best = 0.0
    for ans in answers:
        gold = " ".join(str(ans).strip().lower().split())
        length = max(len(pred), len(gold))
        nl = levenshtein(pred, gold) / length if length else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def _number(text: str) -> float | None:
    return to_float(text.strip().rstrip(".").replace(" ", "")) if text else None


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> float:
    """1.0 when |pred - target| / |target| <= tolerance (numbers), or the strings match (case-insensitive)."""
    pred, gold = _number(prediction), _number(target)
    if pred is not None and gold is not None:
        if gold == 0:
            return float(pred == 0)
        return float(abs(pred - gold) / abs(gold) <= tolerance + 1e-12)
    return float(prediction.strip().lower() == target.strip().lower())


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
