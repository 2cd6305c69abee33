"""The study harness: what every study shares.

A study (a module in this package, a page each) declares its rows (a name and config overrides, or a baseline such
as SFT on the teacher's answers), prepares its data and models once (cached by content under ``--out``), and hands
the harness one callable that runs a (row, seed) under its budget and returns a result record. The harness runs the
grid resumably (each finished run's record is kept in ``runs/<row>-s<seed>/result.json`` and read back, never
retrained) with a progress bar, and the study renders its report from the stored payload alone (``results.json``),
so a stored result re-renders byte for byte (tests/test_studies.py).

The pieces here: ``cached_json`` (a stage's result cached as JSON), ``sft_model`` (a model made by SFT, cached with
its held-out accuracy), ``teacher_labels`` (the teacher's greedy answers as SFT records), ``greedy_accuracy``
(a checkpoint's held-out accuracy), ``run_grid`` and ``save_results``; the statistics are in ``stats``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def cached_json(path: Path, make: Callable[[], dict]) -> dict:
    """``make()``'s result, computed once and kept in ``path`` (JSON)."""
    path = Path(path)
    if not path.exists():
        result = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return json.loads(path.read_text())


def sft_model(out: Path, base: dict, label: str = "") -> dict:
    """A model made by SFT with the config ``base`` (its ``output_dir`` is ``out``), cached: ``out/summary.json``
    holds its held-out metrics (``eval/...``) and the seconds it took; the model is ``out/final``."""
    def make() -> dict:
        from uniopd_mm.config import load_config
        from uniopd_mm.sft import run_sft

        log(f"setup: {label or Path(out).name} ({base['train']['steps']} SFT steps on {Path(base['data']['train_path']).name})")
        t0 = time.time()
        res = run_sft(load_config(None, [], base=base))
        return {"eval": {k: v for k, v in res.items() if k.startswith("eval/")}, "seconds": time.time() - t0}

    return cached_json(Path(out) / "summary.json", make)


def teacher_labels(teacher: Path, family: str, processor: dict | None, train: Path, out: Path,
                   max_new_tokens: int = 24, context: dict | None = None) -> tuple[Path, float]:
    """The teacher's greedy answer to every record of ``train``, as SFT records in ``out`` (cached; returns the
    path and the seconds the labelling took when it was made). ``context`` (``system`` / ``user_suffix``): what the
    teacher reads that the records do not say (teacher.context); the SFT records keep the plain prompts."""
    from uniopd_mm.data import load_jsonl
    from uniopd_mm.evaluate import evaluate
    from uniopd_mm.models import load_frozen
    from uniopd_mm.rollout import make_rollout_engine
    from uniopd_mm.teacher.context import as_read_by_teacher

    out = Path(out)
    meta = out.with_suffix(".json")
    if meta.exists():
        return out, json.loads(meta.read_text())["seconds"]
    t0 = time.time()
    model, proc = load_frozen(teacher, family, processor)
    preds: list = []
    samples = as_read_by_teacher(load_jsonl(train), context)
    evaluate(make_rollout_engine("hf", model=model, processor=proc, batch_size=64), proc, samples,
             max_new_tokens, predictions=preds)
    answers = {p["id"]: p["response"] for p in preds}
    with open(train) as src, open(out, "w") as dst:
        for line in src:
            rec = json.loads(line)
            reply = {"role": "assistant", "content": [{"type": "text", "text": answers[rec["id"]]}]}
            rec["messages"] = rec["messages"] + [reply]
            dst.write(json.dumps(rec) + "\n")
    seconds = time.time() - t0
    meta.write_text(json.dumps({"seconds": seconds,
                                "teacher_train_accuracy": sum(p["correct"] is True for p in preds) / len(preds)}))
    return out, seconds


def greedy_accuracy(model: Path, test: Path, max_new_tokens: int, out: Path, family: str = "text",
                    processor: dict | None = None, batch_size: int = 32, context: dict | None = None) -> dict:
    """Greedy held-out accuracy of a checkpoint (cached in ``out/eval.json``), with its responses; ``context``: the
    records as a privileged teacher reads them (teacher.context's ``system`` / ``user_suffix``)."""
    def make() -> dict:
        from uniopd_mm.data import load_jsonl
        from uniopd_mm.evaluate import evaluate
        from uniopd_mm.models import load_frozen
        from uniopd_mm.rollout import make_rollout_engine
        from uniopd_mm.teacher.context import as_read_by_teacher

        mdl, proc = load_frozen(model, family, processor)
        samples = as_read_by_teacher(load_jsonl(test), context)
        predictions: list = []
        t0 = time.time()
        metrics = evaluate(make_rollout_engine("hf", model=mdl, processor=proc, batch_size=batch_size), proc,
                           samples, max_new_tokens, predictions=predictions)
        return {"accuracy": metrics["eval/accuracy"], "metrics": metrics, "n": len(samples),
                "seconds": round(time.time() - t0, 1), "examples": predictions[:3],
                "responses": [p["response"] for p in predictions]}

    return cached_json(Path(out) / "eval.json", make)


def run_grid(out: Path, jobs: Iterable[tuple[str, int]], run_one: Callable[[str, int, Path], dict],
             on_result: Callable[[list[dict]], object] | None = None, desc: str = "runs",
             report_only: bool = False) -> list[dict]:
    """Runs ``run_one(row, seed, run_dir)`` for each (row, seed) in ``jobs`` with a progress bar; a run whose record
    is on disk (``out/runs/<row>-s<seed>/result.json``) is read back instead. ``on_result`` gets the records so far
    after each run (a study writes its report there: partial results survive an interrupted grid). ``report_only``:
    run nothing; the records on disk only (the missing runs are named in the log), then ``on_result`` once."""
    from tqdm import tqdm

    jobs = list(jobs)
    results, missing = [], []
    bar = tqdm(jobs, desc=desc, unit="run", disable=report_only)
    for name, seed in bar:
        bar.set_postfix_str(f"{name} (seed {seed})")
        record = Path(out) / "runs" / f"{slug(name)}-s{seed}" / "result.json"
        if report_only:
            if record.exists():
                results.append(json.loads(record.read_text()))
            else:
                missing.append(f"{name} (seed {seed})")
            continue
        results.append(cached_json(record, lambda: run_one(name, seed, record.parent)))
        if on_result is not None:
            on_result(results)
    if report_only:
        if missing:
            log(f"report only: {len(missing)} of {len(jobs)} runs not on disk, left out: {', '.join(missing)}")
        if on_result is not None and results:
            on_result(results)
    return results


def stamped(payload: dict) -> dict:
    """``payload`` with the date and this machine's core count, where it has none (a report renders from them)."""
    payload.setdefault("date", time.strftime("%Y-%m-%d"))
    payload.setdefault("cpu_count", os.cpu_count())
    return payload


def grid_parser(study: str, doc: str, out: Path, rows: dict, row_default: str = "all", seeds: str = "0",
                budget: float = 120.0, eval_every: int | None = 20):
    """The command line every grid study shares: --out, --rows, --seeds, --budget, --steps (a cap) and, where the
    study evaluates during training, --eval-every; the study adds its own."""
    import argparse

    ap = argparse.ArgumentParser(prog=f"study.py {study}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--rows", default=row_default, help=f"comma-separated subset of: {', '.join(rows)} (or all)")
    ap.add_argument("--seeds", default=seeds)
    ap.add_argument("--budget", type=float, default=budget, help="seconds of training per row (evaluation not counted)")
    ap.add_argument("--steps", type=int, default=None, help="cap the steps of every row (the quick modes use 2)")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: the report from the runs already on disk (a missing one is left out and named)")
    if eval_every is not None:
        ap.add_argument("--eval-every", type=int, default=eval_every, help="greedy evaluation every N steps")
    return ap


def split_rows(text: str) -> list[str]:
    """``--rows``: names separated by commas outside parentheses ("opd,uni-opd (text preset, delta 10)")."""
    import re

    return [name.strip() for name in re.split(r",(?![^()]*\))", text) if name.strip()]


def chosen_rows(ap, text: str, rows: dict, every: list[str] | None = None) -> list[str]:
    """The rows ``--rows`` names (``all``: ``every``, by default all of ``rows``), refusing an unknown one by name."""
    chosen = list(every if every is not None else rows) if text == "all" else split_rows(text)
    unknown = [r for r in chosen if r not in rows]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {list(rows)}")
    return chosen


def report(out: Path, payload: dict, render, plot) -> list[str]:
    """A grid study's report from its payload: ``render(payload)`` (the table lines) and ``plot(payload)`` (a
    figure), with the date and core count stamped where the payload has none."""
    payload = stamped(payload)
    return save_results(out, render(payload), payload, plot(payload))


def save_results(out: Path, lines: list[str], payload: dict, fig=None) -> list[str]:
    """A study's report: ``lines`` to out/results.md, ``payload`` to out/results.json, ``fig`` to out/curves.png;
    prints the table and where everything went."""
    out = Path(out)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    if fig is not None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=100)
        plt.close(fig)
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}" + (f", {out / 'curves.png'}" if fig else ""))
    return lines


def by_row(results: list[dict]) -> dict[str, list[dict]]:
    """The records grouped by row, rows in first-seen order, each row's records sorted by seed."""
    rows: dict[str, list[dict]] = {}
    for r in results:
        rows.setdefault(r["row"], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in rows.items()}


def figure(panels: int, width: float = 5.5, height: float = 4.5):
    """(fig, axes) of a study's figure on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return fig, list(axes[0])


def settings_dir(out: Path, settings: dict) -> Path:
    """``out/<tag>``: where a grid under these settings keeps its runs and report, so that runs under other
    settings (another learning rate, budget, overrides) never read each other's results while the prepared data
    and models under ``out`` are shared. The tag is short and readable, with a digest of everything."""
    import hashlib

    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    head = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(settings.items())
                    if isinstance(v, (int, float)) and not isinstance(v, bool))
    return Path(out) / f"{head[:80]}-{digest}"


def seeds_of(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2], refusing what is not a comma-separated list of integers."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: {text!r} is not a comma-separated list of integers") from None
