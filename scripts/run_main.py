"""The main job (`make run`): build tiny models and data, make a teacher and a weak student, distil
with Uni-OPD under DeepSpeed, evaluate on held-out questions, and write a report. Finished stages are cached.

    python scripts/run_main.py [--out runs/main --steps 1200 --fresh --no-cliff-check]

Stages: 1 tiny models + synthetic data: by default counting questions about images ("red: circle square, so 2")
and motion questions about videos ("blue triangle: up, so up") at difficulty 1 with disjoint splits (no test
question and scene is in training); 2 SFT teacher (tiny Qwen2-VL teacher preset, 1500 steps on all 4000 training
records) and weak student (student preset, 400 steps on only the first 64 records), the student's vision tower
frozen like the teacher's (a random tiny tower trained at the language model's rate stops the model learning
from it: docs/results.md); by default also students made with 20% fewer and more SFT steps and another seed,
whose starting accuracy shows the weak student is not on a cliff of its step count; 3 greedy evaluation of both
on the test split; 4 `deepspeed scripts/train_mm.py` with the uniopd_mm preset on all training prompts (no
labels used; counting drawn 3 times as often as motion, rollouts sampled at temperature 1.5, 48 prompts x 2 rollouts
per step: docs/results.md says why); 5 evaluation of the student, report.md / report.json / curves.png under --out.
``--level 0 --domains shapes-color,video-color --temperature 1`` gives the earlier colour job, whose test split
repeats training questions (docs/results.md has its command).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784, "video_max_pixels": 12544}
DOMAINS = ("shapes-count", "motion")
# motion is learned within about 500 Uni-OPD steps and counting is still rising at the end, so counting gets 3 in 4 prompts
DOMAIN_WEIGHTS = "shapes-count=3,motion=1"
MAX_NEW_TOKENS = 24  # the longest answer is 10 tokens with its end token
VISION_CACHE = 8192  # frozen towers' features of every training and test image / video (train.vision_cache)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sft_cfg(model, out, data, steps, lr, seed=0, vision_lr_scale=0.0, train="train.jsonl"):
    return {"name": Path(out).name, "output_dir": str(out), "seed": seed,
            "student": {"path": str(model), "family": "qwen2_vl", "processor": PIXELS},
            "data": {"train_path": str(data / train), "test_path": str(data / "test.jsonl")},
            "rollout": {"max_new_tokens": MAX_NEW_TOKENS},
            "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 32, "lr": lr, "warmup_steps": 5,
                      "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": vision_lr_scale,
                      "vision_cache": VISION_CACHE if vision_lr_scale == 0 else 0}}


def cliff_check(out: Path, tiny: Path, data: Path, steps: int, vision_lr_scale: float, lr: float = 1e-3,
                train: str = "train.jsonl", seeds: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Greedy test accuracy of students made like the weak one with 20% fewer / more steps and with each of ``seeds``."""
    from uniopd_mm.config import load_config
    from uniopd_mm.sft import run_sft

    res = {}
    for label, n, seed in ((f"{int(steps * 0.8)} steps", int(steps * 0.8), 0), (f"{int(steps * 1.2)} steps", int(steps * 1.2), 0),
                           *((f"{steps} steps, seed {s}", steps, s) for s in seeds)):
        done = out / "cliff" / label.replace(" ", "_").replace(",", "") / "summary.json"
        if not done.exists():
            r = run_sft(load_config(None, [], base=sft_cfg(tiny / "qwen2_vl-student", done.parent, data, n, lr, seed,
                                                           vision_lr_scale, train)))
            done.write_text(json.dumps({"accuracy": r["eval/accuracy"]}))
        res[label] = json.loads(done.read_text())["accuracy"]
    return res


def parse_domain_weights(text: str) -> dict[str, float]:
    """``"a=3,b=1"`` -> ``{"a": 3.0, "b": 1.0}``; ``""`` -> ``{}``."""
    weights = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = pair.partition("=")
        try:
            weight = float(value) if sep else -1.0
        except ValueError:
            weight = -1.0
        if weight < 0:
            raise SystemExit(f"--domain-weights: {pair!r} is not domain=weight with a weight >= 0")
        weights[name.strip()] = weight
    return weights


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/main"))
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--tiny", type=Path, default=None, help="tiny model presets (default: ARTIFACTS/tiny)")
    ap.add_argument("--steps", type=int, default=1200, help="Uni-OPD steps")
    ap.add_argument("--opd-lr", type=float, default=6e-4,
                    help="peak learning rate of the Uni-OPD stage (50 warm-up steps, then cosine decay to a tenth)")
    ap.add_argument("--teacher-steps", type=int, default=1500)
    ap.add_argument("--student-steps", type=int, default=400)
    ap.add_argument("--domains", default=",".join(DOMAINS), help="synthetic domains")
    ap.add_argument("--domain-weights", default=None,
                    help=f"sampling weight of each domain's prompts in the Uni-OPD stage, as domain=weight pairs (a domain "
                         f"left out weighs 1; '' samples train.jsonl uniformly; default {DOMAIN_WEIGHTS} with the default "
                         f"--domains, else '')")
    ap.add_argument("--temperature", type=float, default=1.5,
                    help="rollout temperature of the Uni-OPD stage (RECIPE's reference: 1.0)")
    ap.add_argument("--level", type=int, default=1,
                    help="synthetic difficulty; 0 repeats test questions in training, >= 1 draws disjoint splits")
    ap.add_argument("--n-train", type=int, default=4000, help="synthetic training records")
    ap.add_argument("--student-records", type=int, default=64,
                    help="fine-tune the weak student on only the first N training records (0: all of them); the Uni-OPD "
                         "stage still distils on every training prompt")
    ap.add_argument("--n-test", type=int, default=200, help="synthetic test records")
    ap.add_argument("--sft-vision-lr-scale", type=float, default=0.0,
                    help="vision tower learning-rate scale of the teacher and student SFT")
    ap.add_argument("--sft-lr", type=float, default=1e-3, help="learning rate of the teacher and student SFT")
    ap.add_argument("--position-cues", action="store_true",
                    help="tint each grid cell's background by its row and column (SyntheticSpec.position_cues)")
    ap.add_argument("--motion-solution", choices=("cells", "direction"), default="direction",
                    help="what a motion answer states (SyntheticSpec.motion_solution)")
    ap.add_argument("--cliff-check", action=argparse.BooleanOptionalAction, default=True,
                    help="also report students made with 20%% fewer / more SFT steps and another seed (about 45 s)")
    ap.add_argument("--cliff-seeds", default="1",
                    help="seeds of the nearby students made like the weak one (comma-separated; the weak one is seed 0)")
    ap.add_argument("--fresh", action="store_true", help="rebuild every stage")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for the Uni-OPD run (e.g. algo.loss=reverse_kl)")
    args = ap.parse_args(argv)
    try:
        cliff_seeds = tuple(int(x) for x in args.cliff_seeds.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"--cliff-seeds: {args.cliff_seeds!r} is not a comma-separated list of integers") from None
    domains = tuple(args.domains.split(","))
    if args.domain_weights is None:
        args.domain_weights = DOMAIN_WEIGHTS if domains == DOMAINS else ""
    weights = parse_domain_weights(args.domain_weights)
    if set(weights) - set(domains):
        raise SystemExit(f"--domain-weights names {sorted(set(weights) - set(domains))}, not among --domains {args.domains}")
    t_start = time.time()
    out, art = args.out, args.artifacts
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # the cached data and SFT stages are only reused under the settings that made them (the Uni-OPD stage checks
    # its own below); a folder from before this record existed is not trusted either
    upstream = {k: getattr(args, k) for k in ("domains", "level", "n_train", "n_test", "position_cues",
                                               "motion_solution", "teacher_steps", "student_steps",
                                               "student_records", "sft_lr", "sft_vision_lr_scale")}
    upstream["tiny"] = str(args.tiny or art / "tiny")
    stages = out / "stages.json"
    if (json.loads(stages.read_text()) if stages.exists() else None) != upstream and (out / "data").exists():
        log("the data or SFT settings changed since the cached run: rebuilding every stage")
        shutil.rmtree(out)
        out.mkdir(parents=True)
    stages.write_text(json.dumps(upstream, indent=1))

    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.synthetic import SyntheticSpec, generate
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    log("1/5 tiny models and synthetic data")
    tiny = args.tiny or art / "tiny"
    make_tiny_models(tiny, PRESET_GROUPS["minimal"])
    data = out / "data"
    if not (data / "test.jsonl").exists():
        generate(SyntheticSpec(n_train=args.n_train, n_test=args.n_test, domains=domains,
                               levels=(args.level,), disjoint=args.level >= 1, position_cues=args.position_cues,
                               motion_solution=args.motion_solution), data)
    student_train = "train.jsonl"
    if args.student_records and args.student_records < args.n_train:
        student_train = f"train_first{args.student_records}.jsonl"
        if not (data / student_train).exists():  # cached with the data (stages.json keeps both current)
            with open(data / "train.jsonl") as src:
                head = [line for _, line in zip(range(args.student_records), src)]
            (data / student_train).write_text("".join(head))
    train_data = {"train_path": str(data / "train.jsonl")}
    if weights:
        paths = {domain: data / f"train_{domain}.jsonl" for domain in domains}
        if not all(path.exists() for path in paths.values()):  # cached with the data
            by_domain = {domain: [] for domain in paths}
            with open(data / "train.jsonl") as src:
                for line in src:
                    by_domain.setdefault(json.loads(line)["domain"], []).append(line)
            for domain, path in paths.items():
                path.write_text("".join(by_domain[domain]))
        train_data = {"mixture": [{"path": str(path), "weight": weights.get(domain, 1.0)} for domain, path in paths.items()]}
    summary = {}
    log("2/5 teacher and weak student by supervised fine-tuning")
    for role, preset, steps, train in (("teacher", "qwen2_vl-teacher", args.teacher_steps, "train.jsonl"),
                                       ("student", "qwen2_vl-student", args.student_steps, student_train)):
        done = out / role / "summary.json"
        if not done.exists():
            t0 = time.time()
            res = run_sft(load_config(None, [], base=sft_cfg(tiny / preset, out / role, data, steps, args.sft_lr,
                                                             vision_lr_scale=args.sft_vision_lr_scale, train=train)))
            acc = {k: v for k, v in res.items() if k.startswith("eval/")}
            done.write_text(json.dumps({"eval": acc, "seconds": time.time() - t0}))
        summary[role] = json.loads(done.read_text())
        log(f"   {role}: greedy test accuracy {summary[role]['eval']['eval/accuracy']:.3f} "
            f"({ {k.split('/')[-1]: round(v, 3) for k, v in summary[role]['eval'].items() if k.count('/') == 2} })")
    if args.cliff_check:
        summary["student_cliff"] = cliff_check(out, tiny, data, args.student_steps, args.sft_vision_lr_scale,
                                               args.sft_lr, student_train, cliff_seeds)
        log(f"   starting accuracy of nearby students: {summary['student_cliff']}")
    log("3/5 evaluation before distillation: see the numbers above (greedy, test split)")
    log("4/5 Uni-OPD with deepspeed scripts/train_mm.py")
    opd = out / "opd"
    cfg_path = out / "opd.yaml"
    import yaml

    cfg = {"name": "main_uniopd_mm", "output_dir": str(opd), "seed": 0,
           "student": {"path": str(out / "student" / "final"), "family": "qwen2_vl", "processor": PIXELS},
           "teacher": {"path": str(out / "teacher" / "final"), "family": "qwen2_vl", "processor": PIXELS,
                       "share_prompts": True},
           "data": {**train_data, "test_path": str(data / "test.jsonl")},
           # 1.5, not RECIPE's 1.0: the weak student, fitted to 64 records, is sure of its wrong answers, and a token
           # it never samples gets no reward (docs/results.md); pi_old from the rollout engine saves a forward pass.
           # 48 prompts x 2 rollouts per step: at the same training seconds more prompts per step beat more rollouts
           # per prompt here (8 x 8: 0.81, 16 x 4: 0.855, 48 x 2 at lr 6e-4: 0.90 on two seeds after 900 steps, 0.945
           # and 0.925 after 1200, which the cached vision features and shared encodings fit in the job; docs/results.md)
           "rollout": {"n": 2, "max_new_tokens": MAX_NEW_TOKENS, "temperature": args.temperature, "reuse_logprobs": True,
                       "batch_size": 96},
           # held-out data (level >= 1) needs the SFT teacher near-certain, and then its log ratio on a wrong student
           # token passes 10: the default log-ratio mask would drop exactly the tokens that carry the signal
           # (docs/results.md, the imperfect-teacher benchmark); the level-0 job keeps the preset's default
           "algo": {"preset": "uniopd_mm", **({"logratio_threshold": None} if args.level >= 1 else {})},
           "train": {"engine": "deepspeed", "zero_stage": 2, "steps": args.steps, "prompts_per_step": 48,
                     "micro_batch_size": 96, "lr": args.opd_lr, "warmup_steps": 50, "weight_decay": 0.0,
                     "lr_schedule": "cosine", "min_lr_ratio": 0.1,
                     "eval_every": max(1, args.steps // 6), "vision_lr_scale": 0.0, "save_every": 100,
                     "share_prompts": True, "vision_cache": VISION_CACHE}}
    text = yaml.safe_dump(cfg) + "".join(f"# override: {o}\n" for o in args.overrides)
    if cfg_path.exists() and cfg_path.read_text() != text:
        log("   the Uni-OPD settings changed since the cached run: starting it again")
        shutil.rmtree(opd, ignore_errors=True)
    cfg_path.write_text(text)
    final = opd / "checkpoints" / f"step_{args.steps:06d}"
    if not (final / "COMPLETE").exists():
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", str(ROOT / "scripts" / "train_mm.py"),
               "--config", str(cfg_path), *args.overrides]
        subprocess.run(cmd, check=True, cwd=ROOT)
    rows = read_metrics(opd / "metrics.jsonl")
    evals = [r for r in rows if r.get("eval/accuracy") is not None]
    log("5/5 report")
    teacher_acc = summary["teacher"]["eval"]["eval/accuracy"]
    before, after = evals[0]["eval/accuracy"], evals[-1]["eval/accuracy"]
    gap = teacher_acc - before
    report = {
        "teacher_acc": teacher_acc, "student_acc_before": before, "student_acc_after": after,
        "gap_closed": (after - before) / gap if gap > 0 else float("nan"),
        "per_domain": {k.split("/")[-1]: {"teacher": summary["teacher"]["eval"].get(k), "before": evals[0].get(k),
                                          "after": evals[-1].get(k)}
                       for k in summary["teacher"]["eval"] if k.count("/") == 2},
        "student_cliff": summary.get("student_cliff"), "data": {"domains": args.domains, "level": args.level,
                                                                "disjoint": args.level >= 1,
                                                                "student_sft_records": student_train},
        "opd_steps": args.steps, "reverse_kl_first": rows[1]["opd/reverse_kl"] if len(rows) > 1 else None,
        "reverse_kl_last": rows[-1].get("opd/reverse_kl"), "wall_seconds": time.time() - t_start,
        "machine": f"{os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
    }
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_metrics.py"), str(opd), "--keys",
                    "eval/accuracy,opd/reverse_kl,margin/inversion_rate,reward/accuracy", "--out", str(out)],
                   check=True, capture_output=True)
    md = ["| model | test accuracy | " + " | ".join(report["per_domain"]) + " |",
          "|---|---|" + "---|" * len(report["per_domain"]),
          f"| teacher (SFT) | {teacher_acc:.3f} | " + " | ".join(f"{v['teacher']:.3f}" for v in report["per_domain"].values()) + " |",
          f"| student before | {before:.3f} | " + " | ".join(f"{(v['before'] or 0):.3f}" for v in report["per_domain"].values()) + " |",
          f"| student after Uni-OPD | {after:.3f} | " + " | ".join(f"{(v['after'] or 0):.3f}" for v in report["per_domain"].values()) + " |",
          "", f"gap closed: {report['gap_closed']:.2f}; {args.steps} steps; whole job {report['wall_seconds']:.0f} s; "
              f"test split: {args.domains} at difficulty {args.level}, "
              f"{'disjoint from training' if args.level >= 1 else 'repeating training questions'}; weak student: "
              f"{args.student_steps} SFT steps on {student_train}; Uni-OPD on all of train.jsonl"
              + (f" (domain weights {args.domain_weights})" if weights else "") + f", temperature {args.temperature:g}"]
    if report["student_cliff"]:
        md.append("starting accuracy of nearby students: " + ", ".join(f"{k}: {v:.3f}" for k, v in report["student_cliff"].items()))
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print("\n".join(md))
    log(f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'curves.png'}")
    return report


if __name__ == "__main__":
    main()
