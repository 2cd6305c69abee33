"""Where the OPD signal sits: the per-token reward log pi_T - log pi_S on the student's own samples, by token.

    python scripts/token_rewards.py --student runs/ablate_heldout/student/final \\
        --teacher runs/ablate_heldout/teacher/final --data runs/ablate_heldout/data/test.jsonl

The student samples ``--samples`` responses per prompt at temperature 1 with plain transformers ``generate``;
both models then score the sampled tokens with one direct forward each (not the trainer's scoring path). As in
the trainer, the processor's suppressed tokens (specials the student never samples) are excluded from sampling
and masked out of both distributions before the log-softmax. Prints, for the response tokens that carry the
most of the total |log ratio|: their count, mean log ratio and share; plus a few sampled responses with the
ratio of every token. The families must share the vocabulary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}


def sequence_logprobs(model, ids, types, features, prompt_len: int, suppressed: list[int]):
    """Log-probs of ids[prompt_len:] under ``model`` (one direct forward), the suppressed tokens given probability 0."""
    import torch

    from uniopd_mm.algo.logprobs import selective_log_softmax

    with torch.no_grad():
        kwargs = {"mm_token_type_ids": types} if types is not None else {}
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs, **features).logits
    return selective_log_softmax(logits[:, prompt_len - 1:-1], ids[:, prompt_len:], suppressed)[0]


def token_rewards(student_path, teacher_path, family: str, data, n_prompts: int = 40, samples: int = 4,
                  max_new_tokens: int = 24, seed: int = 0, top: int = 8) -> dict:
    import torch

    from uniopd_mm.algo.opd import opd_advantages
    from uniopd_mm.data import load_jsonl
    from uniopd_mm.models import load_frozen

    student, proc = load_frozen(student_path, family, PIXELS)
    teacher, _ = load_frozen(teacher_path, family, PIXELS)
    tok, suppressed = proc.tokenizer, list(proc.suppressed_token_ids)
    torch.manual_seed(seed)
    per_token, examples, n_tokens = collections.defaultdict(list), [], 0
    for sample in load_jsonl(data)[:n_prompts]:
        enc = proc.encode_prompt(sample)
        ids = torch.tensor([enc.prompt_ids])
        types = torch.tensor([enc.token_type_ids]) if enc.token_type_ids is not None else None
        features = dict(enc.features)
        for _ in range(samples):
            extra = {"mm_token_type_ids": types} if types is not None else {}
            out = student.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **features,
                                   do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                   suppress_tokens=suppressed)
            full_types = None if types is None else torch.cat(
                [types, torch.zeros(1, out.shape[1] - types.shape[1], dtype=types.dtype)], 1)
            # the trainer's per-token reward (algo/opd.py) on the two direct forwards
            ratio = opd_advantages(sequence_logprobs(teacher, out, full_types, features, ids.shape[1], suppressed),
                                   sequence_logprobs(student, out, full_types, features, ids.shape[1], suppressed),
                                   torch.ones(out.shape[1] - ids.shape[1])).tolist()
            pieces = [tok.decode([t]) for t in out[0, ids.shape[1]:].tolist()]
            n_tokens += len(pieces)
            for piece, r in zip(pieces, ratio):
                per_token[piece.strip() or piece].append(r)
            if len(examples) < 6:
                examples.append({"response": "".join(pieces), "answer": sample.answer,
                                 "ratios": [round(r, 2) for r in ratio]})
    total = sum(abs(r) for rs in per_token.values() for r in rs) or 1.0
    rows = sorted(({"token": k, "count": len(v), "mean": sum(v) / len(v), "share": sum(abs(r) for r in v) / total}
                   for k, v in per_token.items()), key=lambda r: -r["share"])
    return {"tokens": n_tokens, "rows": rows[:top], "all_rows": rows, "examples": examples}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--family", default="qwen2_vl")
    ap.add_argument("--data", type=Path, required=True, help="JSONL of prompts (the first --n-prompts are used)")
    ap.add_argument("--n-prompts", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4, help="responses sampled per prompt")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = token_rewards(args.student, args.teacher, args.family, args.data, args.n_prompts, args.samples, seed=args.seed)
    print(f"{res['tokens']} sampled response tokens; the tokens carrying the most of the total |log pi_T - log pi_S|:")
    print("| token | count | mean log ratio | share of total abs ratio |\n|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['token']!r} | {r['count']} | {r['mean']:.2f} | {r['share']:.2f} |")
    for e in res["examples"]:
        print(json.dumps(e))
    return res


if __name__ == "__main__":
    main()
