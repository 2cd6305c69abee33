"""Peak memory of teacher scoring: our scorer vs a naive full-logits log-softmax.

    python scripts/bench_teacher_memory.py [--vocab 32000,150000 --batch 8 --prompt 256 --response 512]

Both score the same sampled response tokens with a random-init causal LM (hidden 64, 2 layers) of
the given vocabulary. Naive: logits for the whole sequence, a float32 log_softmax over [B, L, V],
then gather. Ours (``uniopd_mm.models.score_response_tokens``, what the HF teacher runs): the
backbone once, then the output head on ``--chunk`` response positions at a time, each chunk reduced
to gather minus logsumexp in float32: the [B, T, V] logits never exist. Peak memory is measured in a fresh subprocess per run, so one run cannot hide another's
allocations: the kernel's high-water mark (VmHWM) is reset after the model is built (/proc/self/clear_refs),
and the peak is VmHWM minus the RSS at that point. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from transformers import Qwen2Config, Qwen2ForCausalLM
from uniopd_mm.models import score_response_tokens
vocab, B, P, T, mode, dtype = {vocab}, {batch}, {prompt}, {response}, {mode!r}, getattr(torch, {dtype!r})
torch.manual_seed(0)
model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)).to(dtype).eval()
ids = torch.randint(0, vocab, (B, P + T))
batch = {{"input_ids": ids, "attention_mask": torch.ones_like(ids), "responses": ids[:, P:]}}
def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
try:  # reset the high-water mark so that building the model (fp32, then cast) does not hide the peak
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    def rss(): return status_mb("VmHWM")
    base = status_mb("VmRSS")
except OSError:  # no clear_refs: ru_maxrss, which may hide a peak below the model-building one
    def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = rss()
t0 = time.perf_counter()
with torch.no_grad():
    if mode == "naive":
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        lp = torch.log_softmax(logits.float(), -1)[:, P - 1:-1].gather(-1, batch["responses"][..., None])[..., 0]
    else:
        lp = score_response_tokens(model, batch, None, 1.0, {chunk})["logprobs"]
print(json.dumps({{"peak_mb": rss() - base, "seconds": time.perf_counter() - t0, "checksum": float(lp.sum())}}))
"""


def run(mode, vocab, args) -> dict:
    code = CHILD.format(root=str(ROOT), vocab=vocab, batch=args.batch, prompt=args.prompt, response=args.response,
                        mode=mode, dtype=args.dtype, chunk=args.chunk)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", default="32000,150000")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--response", type=int, default=512)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--chunk", type=int, default=256, help="response positions per output-head chunk")
    args = ap.parse_args(argv)
    results = []
    print(f"batch {args.batch}, prompt {args.prompt}, response {args.response} tokens, model dtype {args.dtype}")
    print(f"{'vocab':>8} {'naive MB':>10} {'ours MB':>10} {'saving':>8} {'naive s':>8} {'ours s':>8} {'same?':>6}")
    for vocab in (int(v) for v in args.vocab.split(",")):
        naive, ours = run("naive", vocab, args), run("ours", vocab, args)
        same = abs(naive["checksum"] - ours["checksum"]) <= 1e-3 * max(1.0, abs(naive["checksum"]))
        results.append({"vocab": vocab, "naive": naive, "ours": ours, "same": same})
        print(f"{vocab:>8} {naive['peak_mb']:>10.0f} {ours['peak_mb']:>10.0f} {naive['peak_mb'] / max(ours['peak_mb'], 1):>7.1f}x "
              f"{naive['seconds']:>8.2f} {ours['seconds']:>8.2f} {str(same):>6}")
    return results


if __name__ == "__main__":
    main()
