"""Studies: the experiments behind docs/results.md, each declared in a module of this package (a page each) and
run by the harness (``harness``: cached preparation, rows x seeds resumable with a progress bar, one report; the
statistics in ``stats``).

    python scripts/study.py <study> [options]        # python scripts/study.py <study> --help

``main``: `make run`'s job (also ``scripts/run_main.py``); ``ablation``: the perfect-teacher learning ablation;
``blindspot``: the imperfect-teacher benchmark; ``real-weights``: SmolLM2-135M-Instruct distilled, rows x seeds;
``privileged``: a teacher with privileged context (a system prompt, the worked solution) on SmolLM2.
"""

from __future__ import annotations

import importlib
import os

STUDIES = {"main": "main_job", "ablation": "ablation", "blindspot": "blindspot", "real-weights": "real_weights",
           "privileged": "privileged"}


def study(name: str):
    """The module of the study ``name``."""
    if name not in STUDIES:
        raise SystemExit(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return importlib.import_module(f"{__name__}.{STUDIES[name]}")


def main(argv: list[str]):
    """``<study> [options]``: runs that study's ``main`` with the options."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return study(argv[0]).main(argv[1:])
