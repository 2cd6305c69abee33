"""The main job (`make run`): tiny models and data, a teacher and a weak student made by SFT, Uni-OPD under
DeepSpeed, evaluation on held-out questions, and a report. Finished stages are cached.

    python scripts/run_main.py [--out runs/main --steps 1200 --fresh --no-cliff-check]

Stages: 1 tiny models + synthetic data: by default counting questions about images ("red: circle square, so 2")
and motion questions about videos ("blue triangle: up, so up") at difficulty 1 with disjoint splits; 2 SFT teacher
(1500 steps on all 4000 training records) and weak student (400 steps on only the first 64 records), both vision
towers frozen (a random tiny tower trained at the language model's rate stops the model learning from it:
docs/history.md); by default also students made with 20% fewer and more SFT steps and another seed, whose
starting accuracy shows the weak student is not on a cliff of its step count; 3 greedy evaluation of both on the
test split; 4 `deepspeed scripts/train_mm.py` with the uniopd_mm preset on all training prompts (no labels used;
counting drawn 3 times as often as motion, temperature 1.5, 48 prompts x 2 rollouts per step: docs/results.md says
why); 5 evaluation of the student, report.md / report.json / curves.png under --out.
``--level 0 --domains shapes-color,video-color --temperature 1`` gives the earlier colour job.
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

from .common import PIXELS
from .harness import log, sft_model

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("shapes-count", "motion")
# motion is learned within about 500 Uni-OPD steps and counting is still rising at the end: counting gets 3 in 4 prompts
DOMAIN_WEIGHTS = "shapes-count=3,motion=1"
MAX_NEW_TOKENS = 24  # the longest answer is 10 tokens with its end token
VISION_CACHE = 8192  # frozen towers' features of every training and test image / video (train.vision_cache)
UPSTREAM = ("domains", "level", "n_train", "n_test", "position_cues", "motion_solution", "teacher_steps",
            "student_steps", "student_records", "sft_lr", "sft_vision_lr_scale")


def sft_cfg(model, out, data, steps, lr, seed=0, vision_lr_scale=0.0, train="train.jsonl") -> dict:
    return {"name": Path(out).name, "output_dir": str(out), "seed": seed,
            "student": {"path": str(model), "family": "qwen2_vl", "processor": PIXELS},
            "data": {"train_path": str(data / train), "test_path": str(data / "test.jsonl")},
            "rollout": {"max_new_tokens": MAX_NEW_TOKENS},
            "train": {"steps": steps, "prompts_per_step": 32, "micro_batch_size": 32, "lr": lr, "warmup_steps": 5,
                      "weight_decay": 0.0, "eval_every": steps, "vision_lr_scale": vision_lr_scale,
                      "vision_cache": VISION_CACHE if vision_lr_scale == 0 else 0}}


def cliff_check(args, data: Path, train: str, seeds: tuple[int, ...]) -> dict[str, float]:
    """Greedy test accuracy of students made like the weak one with 20% fewer / more steps and with each of ``seeds``."""
    steps, res = args.student_steps, {}
    for label, n, seed in ((f"{int(steps * 0.8)} steps", int(steps * 0.8), 0),
                           (f"{int(steps * 1.2)} steps", int(steps * 1.2), 0),
                           *((f"{steps} steps, seed {s}", steps, s) for s in seeds)):
        run = args.out / "cliff" / label.replace(" ", "_").replace(",", "")
        cfg = sft_cfg(args.tiny / "qwen2_vl-student", run, data, n, args.sft_lr, seed, args.sft_vision_lr_scale, train)
        res[label] = sft_model(run, cfg, f"nearby student, {label}")["eval"]["eval/accuracy"]
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


def prepare_data(args) -> tuple[Path, str, dict]:
    """The synthetic data, the weak student's first records and (with domain weights) per-domain files, cached
    with the data; returns the data folder, the student's training file and the Uni-OPD stage's data config."""
    from uniopd_mm.synthetic import SyntheticSpec, generate

    data = args.out / "data"
    if not (data / "test.jsonl").exists():
        generate(SyntheticSpec(n_train=args.n_train, n_test=args.n_test, domains=args.domain_list,
                               levels=(args.level,), disjoint=args.level >= 1, position_cues=args.position_cues,
                               motion_solution=args.motion_solution), data)
    student_train = "train.jsonl"
    if args.student_records and args.student_records < args.n_train:
        student_train = f"train_first{args.student_records}.jsonl"
        if not (data / student_train).exists():
            with open(data / "train.jsonl") as src:
                (data / student_train).write_text("".join(line for _, line in zip(range(args.student_records), src)))
    if not args.weights:
        return data, student_train, {"train_path": str(data / "train.jsonl")}
    paths = {domain: data / f"train_{domain}.jsonl" for domain in args.domain_list}
    if not all(path.exists() for path in paths.values()):
        by_domain = {domain: [] for domain in paths}
        with open(data / "train.jsonl") as src:
            for line in src:
                by_domain.setdefault(json.loads(line)["domain"], []).append(line)
        for domain, path in paths.items():
            path.write_text("".join(by_domain[domain]))
    return data, student_train, {"mixture": [{"path": str(path), "weight": args.weights.get(domain, 1.0)}
                                             for domain, path in paths.items()]}


def opd_config(args, data: Path, train_data: dict) -> dict:
    opd = args.out / "opd"
    return {"name": "main_uniopd_mm", "output_dir": str(opd), "seed": 0,
            "student": {"path": str(args.out / "student" / "final"), "family": "qwen2_vl", "processor": PIXELS},
            "teacher": {"path": str(args.out / "teacher" / "final"), "family": "qwen2_vl", "processor": PIXELS,
                        "share_prompts": True},
            "data": {**train_data, "test_path": str(data / "test.jsonl")},
            # 1.5, not RECIPE's 1.0: the weak student, fitted to 64 records, is sure of its wrong answers, and a token
            # it never samples gets no reward; pi_old from the rollout engine saves a forward pass; 48 prompts x 2
            # rollouts per step beat 8 x 8 and 16 x 4 at the same training seconds (docs/history.md)
            "rollout": {"n": 2, "max_new_tokens": MAX_NEW_TOKENS, "temperature": args.temperature,
                        "reuse_logprobs": True, "batch_size": 96},
            # held-out data (level >= 1) needs the SFT teacher near-certain, and then its log ratio on a wrong student
            # token passes 10: the default log-ratio mask would drop exactly the tokens that carry the signal
            "algo": {"preset": "uniopd_mm", **({"logratio_threshold": None} if args.level >= 1 else {})},
            "train": {"engine": "deepspeed", "zero_stage": 2, "steps": args.steps, "prompts_per_step": 48,
                      "micro_batch_size": 96, "lr": args.opd_lr, "warmup_steps": 50, "weight_decay": 0.0,
                      "lr_schedule": "cosine", "min_lr_ratio": 0.1, "eval_every": max(1, args.steps // 6),
                      "vision_lr_scale": 0.0, "save_every": 100, "share_prompts": True, "vision_cache": VISION_CACHE}}


def distil(args, data: Path, train_data: dict) -> Path:
    """Stage 4: `deepspeed scripts/train_mm.py` on the Uni-OPD config (rerun when its settings changed)."""
    import yaml

    opd, cfg_path = args.out / "opd", args.out / "opd.yaml"
    text = yaml.safe_dump(opd_config(args, data, train_data)) + "".join(f"# override: {o}\n" for o in args.overrides)
    if cfg_path.exists() and cfg_path.read_text() != text:
        log("   the Uni-OPD settings changed since the cached run: starting it again")
        shutil.rmtree(opd, ignore_errors=True)
    cfg_path.write_text(text)
    if not (opd / "checkpoints" / f"step_{args.steps:06d}" / "COMPLETE").exists():
        subprocess.run([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1",
                        str(ROOT / "scripts" / "train_mm.py"), "--config", str(cfg_path), *args.overrides],
                       check=True, cwd=ROOT)
    return opd


def summarise(args, summary: dict, student_train: str, t_start: float) -> dict:
    """report.json's content: accuracies before and after per domain, the gap closed, the job's settings."""
    from uniopd_mm.metrics import read_metrics

    rows = read_metrics(args.out / "opd" / "metrics.jsonl")
    evals = [r for r in rows if r.get("eval/accuracy") is not None]
    teacher = summary["teacher"]["eval"]
    before, after = evals[0]["eval/accuracy"], evals[-1]["eval/accuracy"]
    gap = teacher["eval/accuracy"] - before
    return {
        "teacher_acc": teacher["eval/accuracy"], "student_acc_before": before, "student_acc_after": after,
        "gap_closed": (after - before) / gap if gap > 0 else float("nan"),
        "per_domain": {k.split("/")[-1]: {"teacher": teacher.get(k), "before": evals[0].get(k), "after": evals[-1].get(k)}
                       for k in teacher if k.count("/") == 2},
        "student_cliff": summary.get("student_cliff"),
        "data": {"domains": args.domains, "level": args.level, "disjoint": args.level >= 1,
                 "student_sft_records": student_train},
        "settings": {"student_steps": args.student_steps, "temperature": args.temperature,
                     "domain_weights": args.domain_weights if args.weights else ""},
        "opd_steps": args.steps, "reverse_kl_first": rows[1]["opd/reverse_kl"] if len(rows) > 1 else None,
        "reverse_kl_last": rows[-1].get("opd/reverse_kl"), "wall_seconds": time.time() - t_start,
        "machine": f"{os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
    }


def render(report: dict) -> list[str]:
    """report.md, from report.json alone."""
    dom, d, s = report["per_domain"], report["data"], report["settings"]

    def row(label: str, acc: float, key: str) -> str:
        return f"| {label} | {acc:.3f} | " + " | ".join(f"{(v[key] or 0):.3f}" for v in dom.values()) + " |"

    md = ["| model | test accuracy | " + " | ".join(dom) + " |", "|---|---|" + "---|" * len(dom),
          row("teacher (SFT)", report["teacher_acc"], "teacher"), row("student before", report["student_acc_before"], "before"),
          row("student after Uni-OPD", report["student_acc_after"], "after"), "",
          f"gap closed: {report['gap_closed']:.2f}; {report['opd_steps']} steps; whole job {report['wall_seconds']:.0f} s; "
          f"test split: {d['domains']} at difficulty {d['level']}, "
          f"{'disjoint from training' if d['disjoint'] else 'repeating training questions'}; weak student: "
          f"{s['student_steps']} SFT steps on {d['student_sft_records']}; Uni-OPD on all of train.jsonl"
          + (f" (domain weights {s['domain_weights']})" if s["domain_weights"] else "")
          + f", temperature {s['temperature']:g}"]
    if report["student_cliff"]:
        md.append("starting accuracy of nearby students: " +
                  ", ".join(f"{k}: {v:.3f}" for k, v in report["student_cliff"].items()))
    return md


def parse(argv=None):
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
    ap.add_argument("--temperature", type=float, default=1.5, help="rollout temperature of the Uni-OPD stage")
    ap.add_argument("--level", type=int, default=1, help="synthetic difficulty; 0 repeats test questions in training")
    ap.add_argument("--n-train", type=int, default=4000, help="synthetic training records")
    ap.add_argument("--student-records", type=int, default=64,
                    help="fine-tune the weak student on only the first N training records (0: all of them)")
    ap.add_argument("--n-test", type=int, default=200, help="synthetic test records")
    ap.add_argument("--sft-vision-lr-scale", type=float, default=0.0, help="vision tower lr scale of both SFTs")
    ap.add_argument("--sft-lr", type=float, default=1e-3, help="learning rate of the teacher and student SFT")
    ap.add_argument("--position-cues", action="store_true", help="SyntheticSpec.position_cues")
    ap.add_argument("--motion-solution", choices=("cells", "direction"), default="direction",
                    help="what a motion answer states (SyntheticSpec.motion_solution)")
    ap.add_argument("--cliff-check", action=argparse.BooleanOptionalAction, default=True,
                    help="also report students made with 20%% fewer / more SFT steps and another seed (about 45 s)")
    ap.add_argument("--cliff-seeds", default="1", help="seeds of the nearby students (the weak one is seed 0)")
    ap.add_argument("--fresh", action="store_true", help="rebuild every stage")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for the Uni-OPD run (e.g. algo.loss=reverse_kl)")
    args = ap.parse_args(argv)
    try:
        args.cliff_seed_list = tuple(int(x) for x in args.cliff_seeds.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"--cliff-seeds: {args.cliff_seeds!r} is not a comma-separated list of integers") from None
    args.domain_list = tuple(args.domains.split(","))
    if args.domain_weights is None:
        args.domain_weights = DOMAIN_WEIGHTS if args.domain_list == DOMAINS else ""
    args.weights = parse_domain_weights(args.domain_weights)
    if set(args.weights) - set(args.domain_list):
        raise SystemExit(f"--domain-weights names {sorted(set(args.weights) - set(args.domain_list))}, "
                         f"not among --domains {args.domains}")
    args.tiny = args.tiny or args.artifacts / "tiny"
    return args


def fresh_out(args) -> None:
    """The cached data and SFT stages are reused only under the settings that made them (stages.json; the
    Uni-OPD stage checks its own); a folder without that record is not trusted either."""
    out = args.out
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    upstream = {k: getattr(args, k) for k in UPSTREAM} | {"tiny": str(args.tiny)}
    stages = out / "stages.json"
    if (json.loads(stages.read_text()) if stages.exists() else None) != upstream and (out / "data").exists():
        log("the data or SFT settings changed since the cached run: rebuilding every stage")
        shutil.rmtree(out)
        out.mkdir(parents=True)
    stages.write_text(json.dumps(upstream, indent=1))


def main(argv=None) -> dict:
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    args, t_start = parse(argv), time.time()
    fresh_out(args)
    log("1/5 tiny models and synthetic data")
    make_tiny_models(args.tiny, PRESET_GROUPS["minimal"])
    data, student_train, train_data = prepare_data(args)
    log("2/5 teacher and weak student by supervised fine-tuning")
    summary = {}
    for role, preset, steps, train in (("teacher", "qwen2_vl-teacher", args.teacher_steps, "train.jsonl"),
                                       ("student", "qwen2_vl-student", args.student_steps, student_train)):
        cfg = sft_cfg(args.tiny / preset, args.out / role, data, steps, args.sft_lr,
                      vision_lr_scale=args.sft_vision_lr_scale, train=train)
        summary[role] = sft_model(args.out / role, cfg, role)
        log(f"   {role}: greedy test accuracy {summary[role]['eval']['eval/accuracy']:.3f} "
            f"({ {k.split('/')[-1]: round(v, 3) for k, v in summary[role]['eval'].items() if k.count('/') == 2} })")
    if args.cliff_check:
        summary["student_cliff"] = cliff_check(args, data, student_train, args.cliff_seed_list)
        log(f"   starting accuracy of nearby students: {summary['student_cliff']}")
    log("3/5 evaluation before distillation: see the numbers above (greedy, test split)")
    log("4/5 Uni-OPD with deepspeed scripts/train_mm.py")
    opd = distil(args, data, train_data)
    log("5/5 report")
    report = summarise(args, summary, student_train, t_start)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_metrics.py"), str(opd), "--keys",
                    "eval/accuracy,opd/reverse_kl,margin/inversion_rate,reward/accuracy", "--out", str(args.out)],
                   check=True, capture_output=True)
    md = render(report)
    (args.out / "report.md").write_text("\n".join(md) + "\n")
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print("\n".join(md))
    log(f"report: {args.out / 'report.md'}, {args.out / 'report.json'}, {args.out / 'curves.png'}")
    return report
