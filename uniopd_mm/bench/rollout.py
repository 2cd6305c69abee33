"""Rollout speed against a plain ``model.generate`` on the same inputs (interleaved rounds, medians).

    python scripts/convert_gguf.py --out artifacts/smollm2-135m-instruct      # real weights (see there)
    python scripts/bench_rollout.py --model artifacts/smollm2-135m-instruct --layers 8 [--prompts 4 --n 2 --tokens 32]

``--layers K`` keeps the first K decoder layers (SmolLM2-135M cut to 8 of 30 layers is about 57M parameters,
a student-sized model with a real 49,152-token vocabulary). The plain call always samples ``--tokens`` new tokens;
ours stop at EOS, so the tokens they produced are printed next to their times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--layers", type=int, default=None, help="keep the first K decoder layers")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM

    from processors import make_processor
    from uniopd_mm.data import Sample
    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout

    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    if args.layers:
        model.model.layers = model.model.layers[: args.layers]
        model.config.num_hidden_layers = args.layers
    proc = make_processor("text", args.model)
    prompts = [proc.encode_prompt(Sample(id=str(i), messages=[{"role": "user", "content": [
        {"type": "text", "text": f"What is {i + 2} times {i + 5}? Answer briefly."}]}])) for i in range(args.prompts)]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.tokens)
    batch = proc.rollout_batch([p for p in prompts for _ in range(args.n)])

    def plain():
        with torch.no_grad():
            return model.generate(**batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=True,
                                  pad_token_id=proc.pad_token_id)

    engines = {"uniopd_mm rollout (generate)": HFRollout(model, proc).generate,
               "uniopd_mm rollout (static decoder)": HFRollout(model, proc, decoder="static").generate}
    runs = {name: (lambda f=f: sum(len(r) for r in f(prompts, params).responses)) for name, f in engines.items()}
    runs["plain model.generate"] = lambda: plain()[:, batch["input_ids"].shape[1]:].numel()
    times, tokens = {name: [] for name in runs}, {}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - t0)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.model} ({params_m:.0f}M parameters), {args.prompts} prompts x {args.n} samples x {args.tokens} "
          f"tokens, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds:")
    result = {name: statistics.median(t) for name, t in times.items()}
    for name, t in result.items():
        print(f"  {name:36} {t:.3f} s  ({tokens[name]} tokens in the last round)")
    return result


if __name__ == "__main__":
    main()
