"""Peak resident memory of one rollout on a 151,936-token vocabulary (a helper of test_rollout_memory.py).

    python tests/real_conditions/rollout_memory.py MODEL_DIR N T DECODER

Loads the model, warms up with a short rollout, then samples N responses of T tokens (no EOS: the random model
rarely draws one) and prints JSON: the highest resident memory seen during the rollout (a thread reads
/proc/self/statm every 2 ms) less the resident memory just before it, in bytes. ``--hold-logits`` stacks every
step's logits as the old rollout did (``generate(output_logits=True)``), to show the measurement sees it.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class PeakRSS:
    """The highest RSS seen while the block runs, from a sampling thread."""

    def __enter__(self):
        import threading

        self.peak, self.stop = rss(), threading.Event()

        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, rss())
                self.stop.wait(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss())


def main() -> None:
    import torch

    from uniopd_mm.config import ModelConfig
    from uniopd_mm.data import parse_record
    from uniopd_mm.models import load_model, load_processor
    from uniopd_mm.rollout.base import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout

    import gc

    path, n, t, decoder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    hold = "--hold-logits" in sys.argv
    torch.manual_seed(0)
    cfg = ModelConfig(path=path, family="text")
    proc = load_processor(cfg)
    prompt = proc.encode_prompt(parse_record({"id": "q", "domain": "x", "answer": "1",
                                              "messages": [{"role": "user", "content": "tell a long story"}]}))
    rollout = HFRollout(load_model(cfg), proc, batch_size=n, decoder=decoder)
    rollout.generate([prompt], SamplingParams(n=n, max_new_tokens=8))
    if hold:  # the old rollout: every step's [N, V] fp32 logits kept, stacked, then copied
        def hf_generate(batch, params, eos, suppressed, temp):
            gen = rollout.model.generate(**batch, max_new_tokens=params.max_new_tokens, do_sample=True, top_k=0,
                                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
            logits = torch.stack(gen.logits, dim=1).cpu()
            return gen.sequences[:, batch["input_ids"].shape[1]:], torch.zeros(logits.shape[:2])

        rollout.hf_generate = hf_generate
    gc.collect()
    before = rss()
    with PeakRSS() as peak:
        out = rollout.generate([prompt], SamplingParams(n=n, max_new_tokens=t))
    grown = peak.peak - before
    vocab = rollout.model.get_output_embeddings().weight.shape[0]
    print(json.dumps({"n": n, "t": t, "vocab": vocab, "decoder": decoder, "peak_growth_bytes": grown,
                      "tokens": sum(len(r) for r in out.responses)}))


if __name__ == "__main__":
    main()
