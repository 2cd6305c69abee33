"""Benchmark runner: one model on the paper's benchmarks and the synthetic one.

    python eval/run.py --model PATH [--family qwen2_5_vl] --benchmarks mathvision,chartqa,... \
        --data-dir DIR [--backend hf --n K --temperature T --max-new-tokens N --batch-size B --limit L] --out DIR
    python eval/run.py --model PATH --backend vllm --vllm max_model_len=8192 --vllm dtype=bfloat16 ...

``--benchmarks all`` runs every benchmark whose files are present. Each benchmark reads
DIR/<name>/ (see ``--list`` for the files expected); nothing is downloaded. Writes predictions,
scores.json, report.md and report.png under --out; a rerun skips the ids already scored.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    from uniopd_mm.evalsuite.benchmarks import BENCHMARKS
    from uniopd_mm.evalsuite.runner import EvalSettings, run_eval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint directory (or hub id your machine can reach)")
    ap.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "text"])
    ap.add_argument("--benchmarks", default="synthetic", help=f"comma-separated, or all: {', '.join(BENCHMARKS)}")
    ap.add_argument("--data-dir", type=Path, default=Path("data/benchmarks"))
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                    help="generation backend: HF generate, or vLLM (batched; images and video; needs vllm installed)")
    ap.add_argument("--vllm", action="append", default=[], metavar="KEY=VALUE",
                    help="a vllm.LLM argument, repeatable: max_model_len=8192, dtype=bfloat16, "
                         "gpu_memory_utilization=0.85, tensor_parallel_size=2, enforce_eager=true")
    ap.add_argument("--n", type=int, default=None, help="samples per prompt (default: the paper's avg@k per benchmark)")
    ap.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: per benchmark)")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: per benchmark")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    ap.add_argument("--limit", type=int, default=None, help="first N records of each benchmark")
    ap.add_argument("--max-pixels", type=int, default=None, help="image pixel budget (processor image_max_pixels)")
    ap.add_argument("--lenient", action="store_true",
                    help="ChartQA / DocVQA / InfoVQA: score the extracted short answer (last line, no 'Answer:') instead "
                         "of the raw response as lmms-eval does; reported as <name>_lenient, not comparable with papers")
    ap.add_argument("--download", action="store_true",
                    help="first fetch each named benchmark's public release from the Hugging Face Hub into "
                         "DATA_DIR/<name>/ (resumable; HF_ENDPOINT / HF_TOKEN apply); without it nothing is fetched")
    ap.add_argument("--out", type=Path, default=Path("runs/eval"))
    ap.add_argument("--list", action="store_true", help="list the benchmarks, their sources and expected files")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:14} {b.group:10} avg@{b.n:<3} T={b.temperature:<4} {b.source}; files: "
                  f"{args.data_dir / b.name}/{{{', '.join(b.patterns)}}}")
        return 0
    if not args.model and not args.download:
        ap.error("--model is required (or --download alone, to fetch the data only)")
    if args.download:
        from uniopd_mm.evalsuite.download import HUB_SOURCES, DownloadError, download

        wanted = [b for b in BENCHMARKS if HUB_SOURCES.get(b)] if args.benchmarks == "all" \
            else [b.strip() for b in args.benchmarks.split(",") if b.strip()]
        for name in wanted:
            try:
                print(f"{name}: {download(name, args.data_dir, not args.quiet)}")
            except DownloadError as err:
                print(err)
    if not args.model:
        return 0
    names = [b for b in BENCHMARKS if BENCHMARKS[b].files(args.data_dir)] if args.benchmarks == "all" \
        else [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if not names:
        ap.error(f"no benchmark data under {args.data_dir} (see --list)")
    settings = EvalSettings(n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, limit=args.limit, lenient=args.lenient)
    options = {"image_max_pixels": args.max_pixels} if args.max_pixels else {}
    vllm_kwargs = {}
    for item in args.vllm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--vllm {item!r}: expected KEY=VALUE")
        import yaml

        vllm_kwargs[key.strip()] = yaml.safe_load(value)
    if vllm_kwargs and args.backend != "vllm":
        ap.error("--vllm applies to --backend vllm")
    result = run_eval(args.model, args.family, names, args.data_dir, args.out, settings, options, not args.quiet,
                      backend=args.backend, vllm_kwargs=vllm_kwargs)
    print((args.out / "report.md").read_text())
    print(f"wrote {args.out / 'scores.json'}, {args.out / 'report.md'}, {args.out / 'report.png'}")
    return 1 if result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
