"""Final-answer extraction shared by the verifiers and the eval scorers."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"(?:-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+)%?")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None


def answer_tag(text: str) -> str | None:
    m = re.findall(r"<answer>(.*?)</answer>", text, flags=re.S)
    return m[-1].strip() if m else None


def last_number(text: str) -> str | None:
    m = _NUMBER.findall(text)
    return m[-1].replace(",", "") if m else None


def final_answer(text: str) -> str | None:
    """``\\boxed{}`` first, then ``<answer>`` tags, then the last number."""
    for fn in (last_boxed, answer_tag, last_number):
        out = fn(text)
        if out:
            return out
    return None


def to_float(text: str | None) -> float | None:
    if text is None:
        return None
    t = text.strip().rstrip(".").replace(",", "").replace("$", "")
    percent = t.endswith("%")
    try:
        value = float(t.rstrip("%"))
    except ValueError:
        return None
    return value / 100.0 if percent else value


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalise_text(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces (SQuAD-style)."""
    t = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", t).split())


_LETTER_PATTERNS = [
    r"answer\s*(?:is|:)?\s*\(?([A-H])\)?(?![A-Za-z])",
    r"\\boxed\{\s*\(?([A-H])\)?\s*\}",
    r"^\s*\(?([A-H])\)?(?:[.):]|\s|$)",
    r"\(([A-H])\)",
    r"(?<![A-Za-z])([A-H])(?:[.)]\s|\.?$)",
]


def choice_letter(text: str, options: list[str] | None = None) -> str | None:
    """A-H from "Answer: B", "\\boxed{B}", "(B)", "B." or a lone "B"; else the option whose text is given."""
    text = text.replace("**", "")  # markdown bold: "**B**"
    for pat in _LETTER_PATTERNS:
        m = re.findall(pat, text.strip(), flags=re.I | re.M)
        if m:
            return m[-1].upper()
    if options:
        norm = normalise_text(text)
        hits = [i for i, o in enumerate(options) if normalise_text(str(o)) and normalise_text(str(o)) in norm]
        if len(hits) == 1:
            return "ABCDEFGH"[hits[0]]
    return None
