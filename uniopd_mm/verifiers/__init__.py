"""Outcome verifiers: each rollout is correct (True), incorrect (False) or unknown (None).

The verifier comes from the record: ``meta.verifier`` when set, else from its domain
(synthetic domains -> synthetic; ``math*`` -> math; ``code*`` -> code; ``choice``/``mcq*`` -> choice;
``numeric*`` -> numeric; ``string``/``vqa*`` -> string). Unknown (None) when nothing can be
extracted or no verifier applies: such rollouts take no part in balancing or calibration, and
correctness is never added to the loss in the base recipe.
"""

from __future__ import annotations

import re

from uniopd_mm.synthetic import ALL_DOMAINS as SYNTHETIC_DOMAINS
from uniopd_mm.synthetic import check_answer as check_synthetic

from .extract import choice_letter, final_answer, normalise_text, to_float


def verify_math(response: str, answer: str, meta: dict | None = None) -> bool | None:
    """Final answer (boxed / <answer> / last number) checked with math-verify against the reference."""
    from math_verify import parse, verify as mv_verify

    pred = final_answer(response)
    if pred is None:
        return None
    try:
        gold_p, pred_p = parse(f"${answer}$"), parse(f"${pred}$")
        if not pred_p:
            return None
        return bool(mv_verify(gold_p, pred_p))
    except Exception:
        return None


def verify_choice(response: str, answer: str, meta: dict | None = None) -> bool | None:
    """Multiple choice: the letter (A-H) the response picks, or the option text it gives."""
    options = (meta or {}).get("options")
    pred = choice_letter(response, options)
    if pred is None:
        return None
    gold = choice_letter(answer) or answer.strip().upper()
    return pred == gold


def verify_numeric(response: str, answer: str, meta: dict | None = None) -> bool | None:
    """|pred - gold| <= rel_tol * |gold| (``meta.rel_tol``, default 1e-4; exact for gold 0)."""
    pred, gold = to_float(final_answer(response)), to_float(answer)
    if pred is None or gold is None:
        return None
    tol = float((meta or {}).get("rel_tol", 1e-4))
    return abs(pred - gold) <= tol * abs(gold) if gold != 0 else pred == 0


def verify_string(response: str, answer: str, meta: dict | None = None) -> bool | None:
    """Relaxed string match: normalised final answer (or whole response) equals a normalised reference."""
    pred = final_answer(response) if ("\\boxed" in response or "<answer>" in response) else response
    if not pred or not pred.strip():
        return None
    golds = answer if isinstance(answer, list) else [answer]
    return normalise_text(pred) in {normalise_text(str(g)) for g in golds}


def extract_code(response: str) -> str | None:
    blocks = re.findall(r"```(?:python|py)?\s*\n(.*?)```", response, flags=re.S)
    if blocks:
        return blocks[-1]
    return response if ("def " in response or "print(" in response) else None


def verify_code(response: str, answer: str | None, meta: dict | None = None) -> bool | None:
    """Runs the program in the sandbox against ``meta.tests``: all must pass.

    ``meta.tests`` is either a list of ``{"input": str, "output": str}`` (stdin/stdout) or a string of
    assert-style test code appended to the program (with ``meta.entry_point``: ``check(entry_point)``).
    """
    from .sandbox import run_program

    meta = meta or {}
    code = extract_code(response)
    tests = meta.get("tests")
    if code is None or tests is None:
        return None
    limits = {k: meta[k] for k in ("timeout", "memory_mb") if k in meta}
    if isinstance(tests, str):
        program = code + "\n\n" + tests
        if meta.get("entry_point"):
            program += f"\n\ncheck({meta['entry_point']})\n"
        return run_program(program, **limits).ok
    for case in tests:
        res = run_program(code, stdin=str(case.get("input", "")), **limits)
        if not res.ok or res.stdout.split() != str(case.get("output", "")).split():
            return False
    return True


def verify_synthetic(response: str, answer: str, meta: dict | None = None) -> bool | None:
    return check_synthetic(response, answer)


VERIFIERS = {
    "math": verify_math, "choice": verify_choice, "numeric": verify_numeric, "string": verify_string,
    "code": verify_code, "synthetic": verify_synthetic,
}


def verifier_for(domain: str, meta: dict | None = None) -> str | None:
    name = (meta or {}).get("verifier")
    if name:
        if name not in VERIFIERS:
            raise ValueError(f"unknown verifier {name!r}; known: {sorted(VERIFIERS)}")
        return name
    d = domain.lower()
    if domain in SYNTHETIC_DOMAINS:
        return "synthetic"
    for prefix, name in (("math", "math"), ("code", "code"), ("choice", "choice"), ("mcq", "choice"),
                         ("numeric", "numeric"), ("string", "string"), ("vqa", "string")):
        if d.startswith(prefix):
            return name
    return None


def verify(sample, response: str) -> bool | None:
    """Verdict for one decoded response to ``sample``."""
    name = verifier_for(sample.domain, sample.meta)
    if name is None:
        return None
    if sample.answer is None and name != "code":
        return None
    return VERIFIERS[name](response, sample.answer, sample.meta)


def unverifiable_warning(samples) -> str | None:
    """RECIPE 7 (Unknown correctness): balancing and margin calibration act on verdicts only. When most
    records cannot be verified (no verifier for their domain, or no answer; code needs none), a Uni-OPD
    setting silently runs plain OPD: the message to warn with, else None."""
    def unverifiable(s) -> bool:
        name = verifier_for(s.domain, s.meta)
        return name is None or (s.answer is None and name != "code")

    bad = [s for s in samples if unverifiable(s)]
    if len(bad) * 2 <= len(samples):
        return None
    return (f"{len(bad)} of {len(samples)} training records have no verifier for their domain "
            f"(e.g. {sorted({s.domain for s in bad})[:5]}) or no answer: their rollouts are 'unknown', and online "
            "balancing / margin calibration ignore them, so this run is mostly plain OPD. Give each record a domain "
            "with a verifier (math*, code*, choice, numeric, string, the synthetic ones) or meta.verifier.")
