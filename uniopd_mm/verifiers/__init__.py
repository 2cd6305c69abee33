"""Outcome verifiers: each rollout is correct (True), incorrect (False) or unknown (None).

The verifier is chosen by the record's domain. Unknown rollouts take no part in balancing or
calibration, and correctness is never added to the loss in the base recipe.
"""

from __future__ import annotations

from uniopd_mm.synthetic import ALL_DOMAINS as SYNTHETIC_DOMAINS
from uniopd_mm.synthetic import check_answer as check_synthetic


def verify(sample, response: str) -> bool | None:
    """Verdict for one decoded response to ``sample`` (None when the domain has no verifier)."""
    if sample.answer is None:
        return None
    if sample.domain in SYNTHETIC_DOMAINS:
        return check_synthetic(response, sample.answer)
    return None
