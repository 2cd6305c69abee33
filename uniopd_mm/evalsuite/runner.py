"""Runs benchmarks on one model: batched generation, scoring, resumable predictions, reports.

Layout of ``out``::

    out/<benchmark>/predictions.jsonl   one line per prompt: id, responses, extracted answers, scores
    out/<benchmark>/rejects.jsonl       records whose prompt could not be built (scored 0)
    out/scores.json                     per benchmark: avg@k, items, k, temperature, per-domain breakdown
    out/report.md, out/report.png       the table and a bar chart

A rerun reads predictions.jsonl and generates only for ids not in it (a killed run loses at most the
batch in flight); each row carries the fingerprint of the model and settings that made it (``run_fingerprint``),
and rows of another model (another checkpoint folder, weights rewritten since) or other settings are dropped and
generated again. Every response is stripped of surrounding whitespace before it is scored and stored, as
lmms-eval does with every generated answer. avg@k = the mean over prompts of the mean score of their k samples.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from uniopd_mm.data import DataError

from .benchmarks import BENCHMARKS, MissingData


@dataclass
class EvalSettings:
    n: int | None = None  # None: the benchmark's default (the paper's avg@k)
    temperature: float | None = None
    top_p: float = 1.0
    max_new_tokens: int | None = None
    batch_size: int = 16
    limit: int | None = None
    lenient: bool = False  # the looser answer extraction where a benchmark has one (scored as <name>_lenient)


def short(text: str | None, n: int = 200) -> str | None:
    return None if text is None else text[:n]


def extracted(response: str) -> str | None:
    from uniopd_mm.verifiers.extract import final_answer

    from .scorers import short_answer

    return final_answer(response) if ("\\boxed" in response or "<answer>" in response) else short_answer(response)


def model_fingerprint(model_path) -> str:
    """What identifies a checkpoint's weights without reading them: its resolved folder and, for each file in it,
    the name, size and modification time (a hub id stands for itself)."""
    path = Path(str(model_path))
    if not path.is_dir():
        return str(model_path)
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return json.dumps([str(path.resolve()), files])


def run_fingerprint(model: str, bench_name: str, n: int, temperature: float, max_new: int, settings: EvalSettings,
                    extra: dict | None = None) -> str:
    """A short digest of everything that decides a benchmark's predictions: the model, the sampling settings, the
    scorer variant and ``extra`` (backend, family, processor options)."""
    import hashlib

    key = json.dumps([model, bench_name, n, temperature, settings.top_p, max_new, settings.lenient, extra or {}],
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run_benchmark(bench, make_rollout, processor, data_dir: Path, out: Path, settings: EvalSettings,
                  progress: bool = True, model: str = "", extra: dict | None = None) -> dict:
    """``make_rollout(n)``: the generation engine for n samples per prompt (HF generate, or one vLLM engine);
    ``model`` (``model_fingerprint``) and ``extra`` identify what made the predictions, for a resumed run."""
    from tqdm import tqdm

    from uniopd_mm.rollout import SamplingParams

    samples = bench.load_samples(data_dir, settings.limit)
    n = settings.n or bench.n
    temperature = bench.temperature if settings.temperature is None else settings.temperature
    max_new = settings.max_new_tokens or bench.max_new_tokens
    score = bench.lenient if settings.lenient and bench.lenient else bench.score
    bdir = out / result_name(bench, settings)
    bdir.mkdir(parents=True, exist_ok=True)
    pred_path = bdir / "predictions.jsonl"
    run = run_fingerprint(model, bench.name, n, temperature, max_new, settings, extra)
    done: dict[str, dict] = {}
    if pred_path.exists():
        stale = 0
        for line in pred_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: generated again
                continue
            if row.get("run") == run:
                done[row["id"]] = row
            else:
                stale += 1
        if stale:
            # NOTE: another checkpoint evaluated into the same --out must not lend it its answers
            print(f"{pred_path}: {stale} predictions of another model or other settings dropped; generating afresh")
            pred_path.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    todo = [s for s in samples if s.id not in done]
    rollout = make_rollout(n) if todo else None  # a finished benchmark starts no engine
    params = SamplingParams(n=n, temperature=max(temperature, 1e-6), top_p=settings.top_p, max_new_tokens=max_new,
                            greedy=temperature == 0.0, logprobs=False)
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"eval {bench.name}", disable=not progress)
    with open(pred_path, "a") as fout, open(bdir / "rejects.jsonl", "a") as frej:
        for i in range(0, len(todo), settings.batch_size):
            chunk, prompts = [], []
            for s in todo[i:i + settings.batch_size]:
                try:
                    prompts.append(processor.encode_prompt(s))
                    chunk.append(s)
                except (DataError, OSError, ValueError) as err:
                    row = {"id": s.id, "k": n, "run": run, "responses": [], "extracted": [], "scores": [0.0] * n,
                           "domain": s.domain, "error": str(err)}
                    frej.write(json.dumps({"id": s.id, "error": str(err)}) + "\n")
                    fout.write(json.dumps(row) + "\n")
                    done[s.id] = row
            if prompts:
                ro = rollout.generate(prompts, params)
                by_prompt: dict[int, list[str]] = defaultdict(list)
                for j, resp in zip(ro.prompt_index, ro.responses):
                    # NOTE: lmms-eval strips every generated answer before its metric: " Yes" or "A\n" must score
                    by_prompt[j].append(processor.decode(resp).strip())
                for j, s in enumerate(chunk):
                    texts = by_prompt[j]
                    row = {"id": s.id, "k": n, "run": run, "responses": texts, "extracted": [short(extracted(t)) for t in texts],
                           "scores": [float(score(t, s)) for t in texts], "domain": s.domain,
                           "answer": short(s.answer)}
                    fout.write(json.dumps(row) + "\n")
                    done[s.id] = row
            fout.flush()
            bar.update(len(todo[i:i + settings.batch_size]))
    bar.close()
    scored = [s for s in samples if s.id in done]
    rows = [done[s.id] for s in scored]
    per_item = [sum(r["scores"]) / max(len(r["scores"]), 1) for r in rows]
    domains: dict[str, list[float]] = defaultdict(list)
    for r, v in zip(rows, per_item):
        domains[r.get("domain") or bench.name].append(v)
    return {"score": sum(per_item) / max(len(per_item), 1), "items": len(rows), "k": n, "temperature": temperature,
            "max_new_tokens": max_new, "group": bench.group, "rejected": sum(1 for r in rows if r.get("error")),
            "domains": {d: sum(v) / len(v) for d, v in sorted(domains.items())} if len(domains) > 1 else {},
            "notes": bench.notes,
            "aggregates": bench.aggregate(scored, per_item) if bench.aggregate and not settings.lenient else {}}


def result_name(bench, settings: EvalSettings) -> str:
    """Where a benchmark's results go: its name, or ``<name>_lenient`` when scored with the looser extraction."""
    return f"{bench.name}_lenient" if settings.lenient and bench.lenient else bench.name


def rollout_factory(backend: str, model_path, processor, settings: EvalSettings, processor_options=None,
                    vllm_kwargs: dict | None = None):
    """``make_rollout(n)`` for ``run_benchmark``: HF generate on the model loaded once (``batch_size`` prompts,
    n samples each, per generate call), or one vLLM engine for the whole run (it batches by itself)."""
    from uniopd_mm.rollout import make_rollout_engine

    if backend == "vllm":
        engines = []  # started on first use, then shared by every benchmark

        processor.keep_media = True  # vLLM reads the sized images / frames

        def vllm_engine(n):
            if not engines:
                engines.append(make_rollout_engine("vllm", model_path=str(model_path), processor=processor,
                                                   **(vllm_kwargs or {})))
            return engines[0]

        return vllm_engine
    if backend != "hf":
        raise ValueError(f"unknown backend {backend!r}; known: hf, vllm")
    from uniopd_mm.models import frozen_config, load_model

    model = load_model(frozen_config(model_path, processor.family, processor_options), frozen=True)
    return lambda n: make_rollout_engine("hf", model=model, processor=processor, batch_size=settings.batch_size * n)


def run_eval(model_path: str, family: str, benchmarks: list[str], data_dir: Path, out: Path,
             settings: EvalSettings, processor_options: dict | None = None, progress: bool = True,
             backend: str = "hf", vllm_kwargs: dict | None = None) -> dict:
    """Loads the model once and runs each benchmark; a benchmark with missing data is reported and skipped."""
    from uniopd_mm.models import frozen_config, load_processor

    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    out.mkdir(parents=True, exist_ok=True)
    processor = load_processor(frozen_config(model_path, family, processor_options))
    make_rollout = rollout_factory(backend, model_path, processor, settings, processor_options, vllm_kwargs)
    scores_path = out / "scores.json"
    result = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    result.update({"model": str(model_path), "family": family, "backend": backend, "date": time.strftime("%Y-%m-%d"),
                   "machine": f"{os.cpu_count()} CPU cores"})
    result.setdefault("benchmarks", {})
    missing = {}
    t0 = time.time()
    for name in benchmarks:
        bench = BENCHMARKS[name]
        try:
            result["benchmarks"][result_name(bench, settings)] = run_benchmark(
                bench, make_rollout, processor, data_dir, out, settings, progress, model=model_fingerprint(model_path),
                extra={"backend": backend, "family": family, "processor": processor_options or {},
                       "vllm": vllm_kwargs or {}})
        except MissingData as err:
            missing[name] = str(err)
            print(err)
            continue
        scores_path.write_text(json.dumps(result, indent=1))
    result["seconds"] = time.time() - t0
    result["missing"] = missing
    scores_path.write_text(json.dumps(result, indent=1))
    from .report import write_report

    write_report(result, out)
    return result
