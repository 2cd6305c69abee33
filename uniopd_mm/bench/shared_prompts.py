"""What sharing each prompt across its group's samples saves (``train.share_prompts`` /
``teacher.share_prompts``): the student's forward + backward and the teacher's scoring of one
training batch, full forward against shared prompts, interleaved, on the tiny text pair (Qwen3-shaped)
and the tiny Qwen2-VL pair (image and video prompts).

    python scripts/bench_shared_prompts.py [--out runs/bench_shared_prompts --prompts 16 --n 4 --reps 5]

The batch: ``--prompts`` synthetic prompts x ``--n`` samples, random responses of 15-30 tokens (ids
that are never sampled left out). Prints a table and writes report.md / report.json under --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")

PAIRS = {"text": ("text", "qwen3-student", "qwen3-teacher", ("text",)),
         "qwen2_vl": ("qwen2_vl", "qwen2_vl-student", "qwen2_vl-teacher", ("image", "video"))}
PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}


def bench_pair(name: str, tiny: Path, samples, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from processors import make_processor
    from uniopd_mm.models import response_logits, score_response_tokens

    family, student, teacher, modalities = PAIRS[name]
    cls = AutoModelForCausalLM if family == "text" else AutoModelForImageTextToText
    proc = make_processor(family, str(tiny / student), options=None if family == "text" else PIXELS)
    picked = [s for s in samples if s.modality in modalities][: args.prompts]
    prompts = [proc.encode_prompt(s) for s in picked]
    gen = torch.Generator().manual_seed(0)
    allowed = [i for i in range(5, 300) if i not in set(proc.suppressed_token_ids)]
    rows = [p for p in prompts for _ in range(args.n)]
    responses = [[allowed[j] for j in torch.randint(0, len(allowed), (int(k),), generator=gen).tolist()]
                 for k in torch.randint(15, 31, (len(rows),), generator=gen)]
    batch = proc.training_batch(rows, responses)
    s_model, t_model = cls.from_pretrained(tiny / student), cls.from_pretrained(tiny / teacher).eval()
    mask = batch["response_mask"].bool()

    def update(share):
        logits = response_logits(s_model, batch, share_prompts=share)
        (logits.logsumexp(-1) * mask).sum().backward()
        s_model.zero_grad(set_to_none=True)

    def score(share):
        score_response_tokens(t_model, batch, share_prompts=share)

    out = {"pair": name, "batch": list(batch["input_ids"].shape), "response_width": batch["responses"].shape[1]}
    for what, fn in (("student forward + backward", update), ("teacher scoring", score)):
        times = {False: [], True: []}
        for share in (False, True):
            fn(share)  # warm-up
        for _ in range(args.reps):
            for share in (False, True):
                t = time.perf_counter()
                fn(share)
                times[share].append(time.perf_counter() - t)
        out[what] = {"full_s": statistics.median(times[False]), "shared_s": statistics.median(times[True])}
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_shared_prompts"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of each (median)")
    ap.add_argument("--pairs", default="text,qwen2_vl")
    args = ap.parse_args(argv)
    import torch

    from uniopd_mm.data import load_jsonl
    from uniopd_mm.metrics import write_report
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import make_tiny_models

    args.out.mkdir(parents=True, exist_ok=True)
    pairs = args.pairs.split(",")
    make_tiny_models(args.tiny, [m for p in pairs for m in PAIRS[p][1:3]], progress=False)
    data = args.out / "data"
    if not (data / "train.jsonl").exists():
        generate(SyntheticSpec(n_train=max(192, 12 * args.prompts), n_test=4, levels=(1,)), data, progress=False)
    samples = load_jsonl(data / "train.jsonl")
    results = [bench_pair(p, args.tiny, samples, args) for p in pairs]
    lines = [f"{args.prompts} prompts x {args.n} samples, responses of 15-30 tokens; median of {args.reps} interleaved "
             f"repetitions; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| pair | batch [B, L] | response width | what | full forward s | shared prompts s | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for what in ("student forward + backward", "teacher scoring"):
            full, shared = r[what]["full_s"], r[what]["shared_s"]
            lines.append(f"| {r['pair']} | {r['batch']} | {r['response_width']} | {what} | {full:.3f} | {shared:.3f} | "
                         f"{full / shared:.2f}x |")
    write_report(args.out, lines, results)
    return results


if __name__ == "__main__":
    main()
