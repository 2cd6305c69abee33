"""Offline difficulty-aware balancing (RECIPE 3a): the student samples N responses per prompt,
verifiers count the passes, and prompts of medium difficulty are upsampled toward a flat histogram.

    python scripts/offline_balance.py --config scripts/configs/tiny_qwen2_vl.yaml \
        --data artifacts/synthetic/train.jsonl --out runs/balanced/train.jsonl \
        [--n 8 --temperature 1.0 --top-p 0.95 --top-k 50 --max-factor 4 --include-easy --batch-prompts 16]

Never drops a prompt: all-correct and all-wrong prompts keep factor 1, and so do unverifiable ones (any
unknown verdict: no verifier for the record's domain, or no answer found), which stay out of the
histogram instead of counting as hard. Writes OUT (each record with
``meta.pass_count`` and ``meta.offline_factor``; repeated copies get ids ``<id>#dup<j>``), OUT's
``.report.json`` and ``.report.png`` (before/after histograms), and ``.passes.jsonl`` (one line per
scored prompt: a rerun resumes from it). Records that cannot be read go to ``.rejects.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")


def score_prompts(cfg, samples, passes_path: Path, n: int, params, batch_prompts: int, rejects) -> dict[str, dict]:
    """Pass counts per record id, appended to ``passes_path`` as they are computed (resumable)."""
    from tqdm import tqdm

    from uniopd_mm.data import DataError
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.models import load_model, load_processor
    from uniopd_mm.rollout import make_rollout_engine
    from uniopd_mm.verifiers import verify

    done = {r["id"]: r for r in read_metrics(passes_path)} if passes_path.exists() else {}
    todo = [s for s in samples if s.id not in done]
    if not todo:
        return done
    model = load_model(cfg.student, frozen=True)
    proc = load_processor(cfg.student)
    rollout = make_rollout_engine("hf", model=model, processor=proc, batch_size=cfg.rollout.batch_size)
    with open(passes_path, "a") as fh:
        for start in tqdm(range(0, len(todo), batch_prompts), desc="offline balance", unit="batch"):
            batch, prompts = [], []
            for s in todo[start:start + batch_prompts]:
                try:
                    prompts.append(proc.encode_prompt(s))
                    batch.append(s)
                except DataError as err:
                    rejects.add(err)
            if not batch:
                continue
            out = rollout.generate(prompts, params)
            for i, s in enumerate(batch):
                outcomes = [verify(s, proc.decode(out.responses[j])) for j in range(len(out.responses))
                            if out.prompt_index[j] == i]
                row = {"id": s.id, "passes": sum(v is True for v in outcomes), "unknown": sum(v is None for v in outcomes),
                       "n": n}
                done[s.id] = row
                fh.write(json.dumps(row) + "\n")
                fh.flush()
    return done


def plot(before: list[int], after: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(before)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before")
    ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after")
    ax.set_xlabel("correct rollouts out of N (difficulty)")
    ax.set_ylabel("prompts")
    ax.set_xticks(xs)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="experiment YAML: its student samples")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=8, help="rollouts per prompt (N)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--max-factor", type=int, default=4)
    ap.add_argument("--include-easy", action="store_true", help="upsample all-correct prompts too")
    ap.add_argument("--batch-prompts", type=int, default=16)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    from uniopd_mm.algo.balance import difficulty_factors
    from uniopd_mm.config import load_config
    from uniopd_mm.data import RejectLog, load_jsonl
    from uniopd_mm.rollout import SamplingParams

    cfg = load_config(args.config, args.overrides)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog(out.with_suffix(".rejects.jsonl"))
    samples = load_jsonl(args.data, strict=False, rejects=rejects, verify_media=cfg.data.verify_media)
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_new_tokens=args.max_new_tokens or cfg.rollout.max_new_tokens)
    passes = score_prompts(cfg, samples, out.with_suffix(".passes.jsonl"), args.n, params, args.batch_prompts, rejects)
    raw = {}
    for line in open(args.data):
        try:
            rec = json.loads(line)
            raw[str(rec["id"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    scored = [s for s in samples if s.id in passes]
    # RECIPE 3a buckets prompts by correct rollouts; an unknown verdict (no verifier for the record's domain, or
    # no answer found) is not a failure, so a prompt with any unknown verdict stays out of the histogram and
    # keeps factor 1 (reported as unverifiable) instead of counting as hard
    verified = {s.id for s in scored if not passes[s.id]["unknown"]}
    before = [0] * (args.n + 1)
    for s in scored:
        if s.id in verified:
            before[passes[s.id]["passes"]] += 1
    factors = difficulty_factors(before, args.max_factor, args.include_easy)
    after = [c * f for c, f in zip(before, factors)]
    data_dir = args.data.resolve().parent
    with open(out, "w") as fh:
        for s in scored:
            k = passes[s.id]["passes"]
            factor = factors[k] if s.id in verified else 1
            rec = dict(raw[s.id])
            # media paths stay valid from the new location
            rec = json.loads(json.dumps(rec))
            for m in rec.get("messages") or []:
                for p in m["content"] if isinstance(m.get("content"), list) else []:
                    for key in ("image", "video"):
                        if isinstance(p.get(key), str) and not os.path.isabs(p[key]):
                            p[key] = str(data_dir / p[key])
            for key in ("images", "videos"):
                if isinstance(rec.get(key), list):
                    rec[key] = [x if os.path.isabs(x) else str(data_dir / x) for x in rec[key]]
            rec["meta"] = {**(rec.get("meta") or {}), "pass_count": k if s.id in verified else None,
                           "offline_factor": factor}
            for j in range(factor):
                copy = dict(rec)
                if j:
                    copy["id"] = f"{s.id}#dup{j}"
                fh.write(json.dumps(copy) + "\n")
    report = {"n_rollouts": args.n, "max_factor": args.max_factor, "include_easy": args.include_easy,
              "prompts": len(scored), "unverifiable_prompts": len(scored) - len(verified),
              "records_out": sum(after) + len(scored) - len(verified), "histogram_before": before, "factors": factors,
              "histogram_after": after, "rejected": rejects.total,
              "unknown_rollouts": sum(p["unknown"] for p in passes.values())}
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    plot(before, after, out.with_suffix(".report.png"))
    print(json.dumps(report, indent=1))
    print(f"balanced data: {out}; report: {out.with_suffix('.report.json')}, {out.with_suffix('.report.png')}")
    return report


if __name__ == "__main__":
    main()
