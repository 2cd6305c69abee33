"""The numbers a study reports: means with 95% t-intervals over seeds, and the time a curve takes to a target."""

from __future__ import annotations

import math

# two-sided 95% quantiles of Student's t by degrees of freedom (larger ones fall back to the nearest below)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def interval(xs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval; 0 with one value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    t = T975.get(n - 1) or T975[max(k for k in T975 if k <= n - 1)]
    return m, t * sd / math.sqrt(n)


def mean(xs):
    """The mean of the values that are not None (None when there are none)."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def cell(xs, spec: str = ".3f") -> str:
    """A table cell: the mean of the values that are not None with its 95% interval ("-" when none)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m, h = interval(xs)
    return format(m, spec) + (f" ± {format(h, spec)}" if len(xs) > 1 else "")


def time_to(curve, target):
    """First training second at which the (seconds, accuracy, ...) curve reaches ``target`` (None: never)."""
    return next((p[0] for p in curve if p[1] >= target - 1e-9), None)


def reach_cell(times: list) -> str:
    """A table cell for per-seed ``time_to`` results: their mean over the seeds that reached the target (with the
    count when not all did), "not reached", or "-" where no seed has a curve."""
    reached = [t for t in times if t is not None]
    if not times:
        return "-"
    if not reached:
        return "not reached"
    return f"{mean(reached):.0f}" + ("" if len(reached) == len(times) else f" ({len(reached)}/{len(times)} seeds)")
