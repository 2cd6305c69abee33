"""GPU benchmark: real-size random-init models, one OPD run under DeepSpeed, stage timings and tokens/s.

    python scripts/bench_gpu.py [--out runs/bench_gpu --steps 6 --prompts 8 --n 4 --max-new-tokens 256]
    python scripts/bench_gpu.py --shape tiny --device cpu     # the same pipeline at tiny size (a CPU check)
    python scripts/bench_gpu.py --rollout-memory [--n 64 --max-new-tokens 4096]   # the rollout alone, its peak memory

``--shape 3b-7b`` (default) builds a Qwen2.5-VL-3B-shaped student and a Qwen2.5-VL-7B-shaped teacher
(the published layer counts, widths, heads, vocabulary 151936 and vision towers) with random weights in
bf16, using the tiny presets' tokenizer and processor (their token ids are valid in the large
vocabulary), saves them under --out/models, writes synthetic image and video colour questions, and
runs ``deepspeed scripts/train_mm.py`` (ZeRO-3, bf16, HF rollout, the teacher on the same GPU) for
--steps steps. Prints and writes report.md / report.json: median seconds per stage, step time,
response tokens per step and tokens/s (first step left out as warm-up), peak GPU memory.

``--rollout-memory`` times one HF rollout of the student alone (N = --n sequences of --max-new-tokens tokens
on one text prompt, temperature 1) and reports its peak GPU memory beside what holding the [N, T, V] float32
logits would take (64 x 4,096 x 151,936 x 4 B = 159 GB), then stops.

Refuses to run the real-size shape without a CUDA device (nothing here can simulate one). The numbers
are for random weights: responses run to --max-new-tokens, which is what a timing needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# published shapes of Qwen2.5-VL-3B-Instruct and -7B-Instruct (text tower; the vision tower is shared
# except for its output width)
SHAPES = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, tie_word_embeddings=False),
}
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, window_size=112,
              fullatt_block_indexes=[7, 15, 23, 31])
PIXELS = {"image_min_pixels": 3136, "image_max_pixels": 200704, "video_min_pixels": 3136, "video_max_pixels": 50176}


def build(tiny_preset: Path, shape: str, out: Path, device: str) -> Path:
    """A random-init Qwen2.5-VL of ``shape`` with the tiny preset's tokenizer and processor, saved to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if (out / "config.json").exists():
        return out
    cfg = AutoConfig.from_pretrained(tiny_preset)
    text = cfg.text_config
    for k, v in SHAPES[shape].items():
        setattr(cfg if k == "tie_word_embeddings" else text, k, v)
    cfg.tie_word_embeddings = SHAPES[shape]["tie_word_embeddings"]
    text.vocab_size = 151936
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    text.max_position_embeddings = 32768
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}
    for k, v in VISION.items():
        setattr(cfg.vision_config, k, v)
    cfg.vision_config.out_hidden_size = text.hidden_size
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_preset).save_pretrained(out)
    return out


def rollout_memory(student: Path, args) -> dict:
    """One rollout of ``args.n`` x ``args.max_new_tokens`` tokens: seconds, tokens, peak memory (GPU) against
    the [N, T, V] float32 logits the old rollout held."""
    import torch

    from uniopd_mm.config import ModelConfig
    from uniopd_mm.data import parse_record
    from uniopd_mm.models import load_model, load_processor
    from uniopd_mm.rollout import SamplingParams
    from uniopd_mm.rollout.hf import HFRollout

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    cfg = ModelConfig(path=str(student), family="qwen2_5_vl", dtype=dtype)
    model, proc = load_model(cfg, device=args.device), load_processor(cfg)
    prompt = proc.encode_prompt(parse_record({"id": "m", "domain": "x", "answer": "1", "messages": [
        {"role": "user", "content": "Write a long story about shapes and colours."}]}))
    rollout = HFRollout(model, proc, batch_size=args.n)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.time()
    out = rollout.generate([prompt], SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens))
    if cuda:
        torch.cuda.synchronize()
    vocab = model.get_output_embeddings().weight.shape[0]
    report = {"n": args.n, "max_new_tokens": args.max_new_tokens, "vocab": vocab, "seconds": time.time() - t0,
              "tokens": sum(len(r) for r in out.responses),
              "weights_gib": base / 2**30 if cuda else None,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
              "ntv_float32_gib": args.n * args.max_new_tokens * vocab * 4 / 2**30,
              "device": torch.cuda.get_device_name(0) if cuda else "cpu", "date": time.strftime("%Y-%m-%d")}
    lines = [f"rollout of {args.n} x {args.max_new_tokens} tokens ({report['tokens']} sampled), V = {vocab}, "
             f"{report['device']}, {report['date']}: {report['seconds']:.1f} s; peak GPU memory "
             + (f"{report['peak_gib']:.1f} GiB (weights {report['weights_gib']:.1f} GiB)" if cuda else "n/a")
             + f"; holding [N, T, V] float32 would take {report['ntv_float32_gib']:.0f} GiB"]
    from uniopd_mm.metrics import write_report

    write_report(args.out, lines, report)
    return report


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_gpu"))
    ap.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    ap.add_argument("--shape", choices=["3b-7b", "tiny"], default="3b-7b")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu with --shape tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--zero-stage", type=int, default=3)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--rollout-memory", action="store_true",
                    help="time one rollout of the student alone (--n sequences of --max-new-tokens) and its peak memory")
    ap.add_argument("--data", type=Path, default=None,
                    help="a dataset made with the spec below, when this machine cannot write videos (no PyAV)")
    args = ap.parse_args(argv)
    import torch
    import yaml

    from uniopd_mm.metrics import write_report
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import make_tiny_models

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here. Run it on a GPU machine, or check the pipeline on the CPU with "
                 "--shape tiny --device cpu.")
    if args.shape != "tiny" and args.device != "cuda":
        sys.exit("bench_gpu: --shape 3b-7b needs --device cuda (a 7B teacher and a 3B student in bf16)")
    args.out.mkdir(parents=True, exist_ok=True)
    make_tiny_models(args.tiny, ["qwen2_5_vl-student", "qwen2_5_vl-teacher"], progress=False)
    if args.shape == "tiny":
        student, teacher = args.tiny / "qwen2_5_vl-student", args.tiny / "qwen2_5_vl-teacher"
        if args.rollout_memory:
            return rollout_memory(student, args)
        pixels = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}
    else:
        t0 = time.time()
        student = build(args.tiny / "qwen2_5_vl-student", "3b", args.out / "models" / "student-3b", args.device)
        teacher = build(args.tiny / "qwen2_5_vl-teacher", "7b", args.out / "models" / "teacher-7b", args.device)
        print(f"models ready in {time.time() - t0:.0f} s", flush=True)
        pixels = PIXELS
    if args.rollout_memory:
        return rollout_memory(student, args)
    data = args.data or args.out / "data"
    if not (data / "train.jsonl").exists():
        generate(SyntheticSpec(n_train=max(64, args.prompts * (args.steps + 1)), n_test=4,
                               domains=("shapes-color", "video-color"), levels=(0,)), data, progress=False)
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    run = args.out / "run"
    cfg = {"name": "bench_gpu", "output_dir": str(run), "seed": 0,
           "student": {"path": str(student), "family": "qwen2_5_vl", "dtype": dtype, "processor": pixels},
           "teacher": {"path": str(teacher), "family": "qwen2_5_vl", "dtype": dtype, "processor": pixels,
                       "device": args.device},
           "data": {"train_path": str(data / "train.jsonl")},
           "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0},
           "algo": {"preset": "uniopd_mm"},
           "train": {"engine": "deepspeed", "zero_stage": args.zero_stage,
                     "precision": "bf16" if args.device == "cuda" else "fp32", "gradient_checkpointing": True,
                     "steps": args.steps, "prompts_per_step": args.prompts, "micro_batch_size": args.micro_batch_size,
                     "lr": 1e-6, "warmup_steps": 0, "resume": False, "save_every": -1},
           "logging": {"tensorboard": False}}
    (args.out / "bench.yaml").write_text(yaml.safe_dump(cfg))
    if (run / "metrics.jsonl").exists():
        (run / "metrics.jsonl").unlink()
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", str(ROOT / "scripts" / "train_mm.py"),
           "--config", str(args.out / "bench.yaml")]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r.get("time/step") is not None][1:] or [r for r in rows if r.get("time/step")]
    med = {k: statistics.median(r[k] for r in timed if r.get(k) is not None)
           for k in timed[0] if k.startswith("time/") and k != "time/train_elapsed"}
    report = {"shape": args.shape, "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "steps_timed": len(timed), "stages_s": med,
              "tokens_per_step": statistics.median(r["response/tokens"] for r in timed),
              "tokens_per_s": statistics.median(r["throughput/tokens_per_s"] for r in timed),
              "peak_gpu_gib": max((r.get("memory/peak_gib") or 0.0) for r in timed) or None,
              "wall_seconds": wall, "date": time.strftime("%Y-%m-%d")}
    lines = [f"{args.shape} ({report['device']}), {args.prompts} prompts x {args.n} samples, <= {args.max_new_tokens} "
             f"new tokens, ZeRO-{args.zero_stage}; median over {len(timed)} steps; {report['date']}", "",
             "| stage | seconds |", "|---|---|"] + [f"| {k[5:]} | {v:.3f} |" for k, v in med.items()] + [
             "", f"response tokens / step {report['tokens_per_step']:.0f}; tokens/s {report['tokens_per_s']:.1f}"]
    write_report(args.out, lines, report)
    return report


if __name__ == "__main__":
    main()
