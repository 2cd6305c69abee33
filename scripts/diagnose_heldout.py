"""Diagnostics behind the held-out findings in docs/results.md.

    python scripts/diagnose_heldout.py overfit  --ablation runs/ablate_heldout [--prompts 16 --steps 60]
    python scripts/diagnose_heldout.py position --out runs/diag_position [--steps 1000 --vision-lr-scale 0]
    python scripts/diagnose_heldout.py vision   --out runs/diag_vision [--steps 800]
    python scripts/diagnose_heldout.py capacity --main runs/main [--steps 1500]
    python scripts/diagnose_heldout.py count-errors --model runs/main/opd/checkpoints/step_001200/hf --data runs/main/data

``overfit``: can each objective fit a handful of training prompts at all? The ablation's weak student is
trained on the first ``--prompts`` training records (which are also its test set) with SFT on the ground-truth
solutions (the teacher answers all of them right) and with OPD under each divergence; greedy accuracy every 10
steps. A row that stalls below 1.0 here stalls for a reason other than generalisation.

``position``: can the tiny teacher learn to say where a shape is? The held-out colour questions ("What color is
the circle?") are re-asked as "What row and column is the circle in?" (answer ``row R column C, so R-C``), without
and with ``SyntheticSpec.position_cues``; the teacher preset is fine-tuned on them, and a linear probe is fitted to
the vision tower's token of each shape's cell (800 scenes train it, the rest test it): does the token carry the
cell at all? ``--cue-span 150 --images cues`` makes the tints 2.5 times as strong.

``vision``: does training the tiny teacher's random vision tower stop it learning from the tower? The teacher
preset is fine-tuned on held-out difficulty-1 questions of each of ``--domains`` (motion answers state the
direction, "blue triangle: up, so up") with the tower trained at the language model's learning rate and with the
tower frozen; greedy held-out accuracy every quarter of ``--steps``.

``capacity``: can ``make run``'s student preset learn the job at all? It is fine-tuned as the weak student is (the
same settings, vision tower frozen) but on all of the job's training records with their labels; greedy held-out
accuracy per domain every fifth of ``--steps``. A student that gets there by SFT and not by distillation is held
back by the distillation signal, not by its size.

``count-errors``: what kind of mistake a model makes on the counting test questions (greedy): "none" where
shapes of the colour are present, a shape listed where there is none, too few or too many shapes listed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OBJECTIVES = {
    "sft on the solutions": None,
    "opd (log-ratio mask 10)": ["algo.preset=opd", "algo.logratio_threshold=10"],
    "opd": ["algo.preset=opd"],
    "opd full reverse KL": ["algo.preset=opd", "algo.loss=reverse_kl", "algo.distill_support=full"],
    "opd full forward KL": ["algo.preset=opd", "algo.loss=forward_kl", "algo.distill_support=full"],
}


def overfit(args) -> dict:
    import ablate
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft
    from uniopd_mm.trainer import Trainer

    abl, out = args.ablation, args.out or args.ablation.parent / (args.ablation.name + "_overfit")
    if not (abl / "teacher" / "final").exists() or not (abl / "student" / "final").exists():
        sys.exit(f"diagnose_heldout: no finished ablation setup under {abl} (run scripts/ablate.py --held-out first)")
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    if not (data / "images").exists():
        (data / "images").symlink_to((abl / "data" / "images").resolve())
    with open(abl / "data" / "train.jsonl") as fh:
        (data / "train.jsonl").write_text("".join(list(fh)[:args.prompts]))
    results = {}
    for name, overrides in OBJECTIVES.items():
        run = out / ablate.slug(name)
        shutil.rmtree(run, ignore_errors=True)
        # SFT's target is each record's ground-truth solution (sft.target: meta.solution)
        cfg = ablate.base_cfg(abl / "student" / "final", run, data / "train.jsonl", data / "train.jsonl", args.steps, 1e-3,
                              seed=args.seed, prompts_per_step=args.prompts, warmup_steps=0,
                              eval_every=min(10, args.steps))
        if overrides is None:
            run_sft(load_config(None, [], base=cfg))
        else:
            cfg["teacher"] = ablate.model_cfg(abl / "teacher" / "final")
            # the log-ratio mask is off unless the row sets it (as in the held-out ablation)
            Trainer(load_config(None, ["algo.logratio_threshold=null"] + overrides, base=cfg)).train()
        rows = read_metrics(run / "metrics.jsonl")
        train_rows = [r for r in rows if r.get("train/grad_norm") is not None]
        results[name] = {"eval": [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None],
                         "grad_norm_last5": sum(r["train/grad_norm"] for r in train_rows[-5:]) / 5,
                         "reverse_kl_last5": (sum(r["opd/reverse_kl"] for r in train_rows[-5:]) / 5
                                              if overrides is not None else None)}
        print(f"{name}: {results[name]}", flush=True)
    lines = [f"{args.prompts} training prompts (also the test set), {args.steps} steps of {args.prompts} prompts "
             f"(OPD: x4 samples), lr 1e-3, seed {args.seed}; greedy accuracy", "",
             "| objective | " + " | ".join(f"step {s}" for s, _ in results["opd"]["eval"]) + " | grad norm (last 5) | "
             "sampled reverse KL / token (last 5) |", "|---|" + "---|" * (len(results["opd"]["eval"]) + 2)]
    for name, r in results.items():
        accs = dict(r["eval"])
        rkl = "" if r["reverse_kl_last5"] is None else f"{r['reverse_kl_last5']:.3f}"
        lines.append(f"| {name} | " + " | ".join(f"{accs[s]:.2f}" if s in accs else "" for s, _ in results["opd"]["eval"])
                     + f" | {r['grad_norm_last5']:.3f} | {rkl} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return results


def where_records(src: Path, dst: Path) -> None:
    """Rewrites colour questions about a unique shape kind into questions about its row and column."""
    for split in ("train", "test"):
        with open(src / f"{split}.jsonl") as fh, open(dst / f"{split}.jsonl", "w") as out:
            for line in fh:
                rec = json.loads(line)
                kind = rec["messages"][0]["content"][1]["text"].split()[-1].rstrip("?")
                obj = next(o for o in rec["meta"]["scene"]["objects"] if o["shape"] == kind)
                rec["messages"][0]["content"][1]["text"] = f"What row and column is the {kind} in?"
                rec["answer"] = f"{obj['row']}-{obj['col']}"
                rec["meta"]["solution"] = f"{kind}: row {obj['row']} column {obj['col']}, so {rec['answer']}"
                out.write(json.dumps(rec) + "\n")


def linear_probe(model_dir: Path, data: Path, n_fit: int = 800, n_scenes: int = 1000) -> float:
    """Held-out accuracy of a linear probe from a shape's vision token (3x3 merged tokens per 84x84 scene) to its cell."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    recs = [json.loads(line) for line in open(data / "train.jsonl")][:n_scenes]
    feats, cells, scene_of = [], [], []
    with torch.no_grad():
        for i in range(0, len(recs), 50):
            chunk = recs[i:i + 50]
            images = [Image.open(data / r["messages"][0]["content"][0]["image"]).convert("RGB") for r in chunk]
            enc = proc.image_processor(images=images, return_tensors="pt", do_resize=False)
            out = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
            out = getattr(out, "pooler_output", out)
            tokens = (torch.cat(list(out)) if isinstance(out, (list, tuple)) else out).view(len(chunk), 9, -1)
            for j, (r, t) in enumerate(zip(chunk, tokens)):
                for o in r["meta"]["scene"]["objects"]:
                    cell = (o["row"] - 1) * 3 + o["col"] - 1
                    feats.append(t[cell]), cells.append(cell), scene_of.append(i + j)
    x, y, scene = torch.stack(feats), torch.tensor(cells), torch.tensor(scene_of)
    fit = scene < n_fit
    x = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    probe = torch.nn.Linear(x.shape[1], 9)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(2000):
        loss = torch.nn.functional.cross_entropy(probe(x[fit]), y[fit]) + 1e-4 * probe.weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (probe(x[~fit]).argmax(1) == y[~fit]).float().mean().item()


def _teacher(args, default_out: str) -> tuple[Path, Path]:
    """(the output folder, the tiny Qwen2-VL teacher preset), the presets built if missing."""
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    make_tiny_models(args.tiny, PRESET_GROUPS["minimal"], progress=False)
    return args.out or Path(default_out), args.tiny / "qwen2_vl-teacher"


def _fine_tune(teacher: Path, run: Path, data: Path, steps: int, lr: float, vision_lr_scale: float,
               eval_every: int) -> tuple[dict, list[dict]]:
    """SFT of ``teacher`` on data/train.jsonl from scratch into ``run``; (its result, its metrics rows)."""
    import ablate
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft

    shutil.rmtree(run, ignore_errors=True)
    res = run_sft(load_config(None, [], base=ablate.base_cfg(
        teacher, run, data / "train.jsonl", data / "test.jsonl", steps, lr, vision_lr_scale=vision_lr_scale,
        eval_every=eval_every, save_every=-1)))
    return res, read_metrics(run / "metrics.jsonl")


def position(args) -> dict:
    from uniopd_mm.synthetic import SyntheticSpec, generate

    out, teacher = _teacher(args, "runs/diag_position")
    results = {}
    for tag in args.images.split(","):
        cues = tag == "cues"
        colour, where = out / f"colour_{tag}", out / f"where_{tag}"
        if not (colour / "test.jsonl").exists():
            generate(SyntheticSpec(n_train=4000, n_test=100, domains=("shapes-color",), levels=(1,), disjoint=True,
                                   position_cues=cues, position_cue_span=args.cue_span), colour, progress=False)
        where.mkdir(parents=True, exist_ok=True)
        if not (where / "images").exists():
            (where / "images").symlink_to((colour / "images").resolve())
        where_records(colour, where)
        run = out / f"sft_{tag}"
        res, rows = _fine_tune(teacher, run, where, args.steps, 1e-3, args.vision_lr_scale,
                               args.eval_every or max(1, args.steps // 4))
        evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
        results[tag] = {"sft_eval": evals, "final_accuracy": res["eval/accuracy"],
                        "probe_untrained": linear_probe(teacher, where),
                        "probe_after_sft": linear_probe(run / "final", where)}
        print(f"{tag}: {results[tag]}", flush=True)
    lines = [f"'What row and column is the <shape> in?' (9 cells, chance 0.11), difficulty-1 scenes, 4000 train / 100 "
             f"held-out; teacher preset SFT {args.steps} steps, lr 1e-3, "
             f"{'vision tower frozen' if args.vision_lr_scale == 0 else f'vision tower at lr x {args.vision_lr_scale:g}'}; "
             f"tint span {args.cue_span}", "",
             "| images | held-out accuracy during SFT | linear probe: cell from the shape's vision token (untrained / "
             "after SFT) |", "|---|---|---|"]
    for tag, r in results.items():
        lines.append(f"| {'position cues' if tag == 'cues' else 'plain'} | "
                     + ", ".join(f"{a:.2f} (step {s})" for s, a in r["sft_eval"])
                     + f" | {r['probe_untrained']:.2f} / {r['probe_after_sft']:.2f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return results


def vision(args) -> dict:
    from uniopd_mm.synthetic import SyntheticSpec, generate

    out, teacher = _teacher(args, "runs/diag_vision")
    results = {}
    for domain in args.domains.split(","):
        data = out / f"data_{domain}"
        if not (data / "test.jsonl").exists():
            generate(SyntheticSpec(n_train=4000, n_test=100, domains=(domain,), levels=(1,), disjoint=True,
                                   motion_solution="direction"), data, progress=False)
        for scale in (1.0, 0.0):
            _, rows = _fine_tune(teacher, out / f"sft_{domain}_vision{scale:g}", data, args.steps, args.lr, scale,
                                 max(1, args.steps // 4))
            results[f"{domain}, vision x{scale:g}"] = {
                "evals": [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None],
                "last_loss": [r["train/loss"] for r in rows if r.get("train/loss") is not None][-1]}
            print(domain, scale, results[f"{domain}, vision x{scale:g}"], flush=True)
    lines = [f"teacher preset SFT on held-out difficulty-1 questions (4000 train / 100 test), {args.steps} steps, "
             f"lr {args.lr:g}; vision tower trained at the language model's rate (x1) or frozen (x0)", "",
             "| domain, vision tower | held-out accuracy during SFT | last training loss |", "|---|---|---|"]
    for tag, r in results.items():
        lines.append(f"| {tag} | " + ", ".join(f"{a:.2f} (step {s})" for s, a in r["evals"])
                     + f" | {r['last_loss']:.3f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return results


def capacity(args) -> dict:
    import run_main
    from uniopd_mm.config import load_config
    from uniopd_mm.metrics import read_metrics
    from uniopd_mm.sft import run_sft

    data, out = args.main / "data", args.out or args.main.parent / (args.main.name + "_capacity")
    if not (data / "train.jsonl").exists():
        sys.exit(f"diagnose_heldout: no make-run data under {data} (run scripts/run_main.py first)")
    shutil.rmtree(out, ignore_errors=True)
    cfg = run_main.sft_cfg(args.tiny / "qwen2_vl-student", out, data, args.steps, args.lr)
    cfg["train"]["eval_every"] = max(1, args.steps // 5)
    run_sft(load_config(None, [], base=cfg))
    curve = [{k.split("/")[-1]: r[k] for k in r if k.startswith("eval/accuracy")} | {"step": r["step"]}
             for r in read_metrics(out / "metrics.jsonl") if r.get("eval/accuracy") is not None]
    for row in curve:
        print(row, flush=True)
    (out / "report.json").write_text(json.dumps(curve, indent=1))
    return {"curve": curve}


ERROR_KINDS = ("none, shapes present", "a shape, none present", "too few", "too many")
COUNT_ANSWER = re.compile(r"^\s*(\w+):\s*(.*?),\s*so\s+(\d+)\s*$")  # "<colour>: <shapes>, so <n>"


def count_error_kind(response: str, solution: str) -> str | None:
    """The kind of a counting answer's mistake, by the count it states ("red: circle, so 1" against "red: circle
    square, so 2": too few); None when the counts agree, "unparsed" when the response is not of the form
    "<colour>: <shapes>, so <n>"."""
    got, want = COUNT_ANSWER.match(response), COUNT_ANSWER.match(solution)
    if want is None:
        raise ValueError(f"not a counting solution: {solution!r}")
    if got is None:
        return "unparsed"
    n_got, n_want = int(got.group(3)), int(want.group(3))
    if n_got == n_want:
        return None
    if n_got == 0:
        return "none, shapes present"
    if n_want == 0:
        return "a shape, none present"
    return "too few" if n_got < n_want else "too many"


def count_errors(args) -> dict:
    import run_main
    from uniopd_mm.config import ModelConfig, ProcessorConfig
    from uniopd_mm.data import RejectLog, load_jsonl
    from uniopd_mm.evaluate import evaluate
    from uniopd_mm.models import load_model, load_processor
    from uniopd_mm.rollout import make_rollout_engine

    spec = ModelConfig(path=str(args.model), family="qwen2_vl", processor=ProcessorConfig(**run_main.PIXELS))
    model, proc = load_model(spec).eval(), load_processor(spec)
    rollout = make_rollout_engine("hf", model=model, processor=proc, batch_size=64)
    tests = [s for s in load_jsonl(args.data / "test.jsonl", False, RejectLog(None), False) if s.domain == "shapes-count"]
    preds: list = []
    acc = evaluate(rollout, proc, tests, run_main.MAX_NEW_TOKENS, predictions=preds)["eval/accuracy"]
    solutions = {s.id: s.meta["solution"] for s in tests}
    kinds = [count_error_kind(p["response"], solutions[p["id"]]) for p in preds]
    tally = {k: kinds.count(k) for k in ERROR_KINDS + ("unparsed",)}
    res = {"questions": len(tests), "accuracy": acc, "errors": sum(k is not None for k in kinds), "kinds": tally}
    print(json.dumps(res))
    return {**res, "records": [{**p, "kind": k} for p, k in zip(preds, kinds)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overfit", help="fit a handful of training prompts with SFT and with OPD under each divergence")
    o.add_argument("--ablation", type=Path, default=Path("runs/ablate_heldout"))
    o.add_argument("--out", type=Path, default=None, help="default: <ablation>_overfit")
    o.add_argument("--prompts", type=int, default=16)
    o.add_argument("--steps", type=int, default=60)
    o.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("position", help="can the tiny teacher learn where a shape is (with and without position cues)")
    p.add_argument("--out", type=Path, default=None, help="default: runs/diag_position")
    p.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=None, help="default: a quarter of --steps")
    p.add_argument("--images", default="plain,cues", help="which arms: plain, cues or both")
    p.add_argument("--cue-span", type=int, default=60, help="SyntheticSpec.position_cue_span of the cues arm")
    p.add_argument("--vision-lr-scale", type=float, default=1.0,
                   help="the teacher's vision tower learning-rate scale (0 freezes it; 1.0 was session 9's setting)")
    v = sub.add_parser("vision", help="the teacher fine-tuned with its vision tower trained and frozen")
    v.add_argument("--out", type=Path, default=None, help="default: runs/diag_vision")
    v.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    v.add_argument("--steps", type=int, default=800)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--domains", default="motion,shapes-count", help="synthetic domains, one SFT pair each")
    c = sub.add_parser("capacity", help="make run's student preset fine-tuned on all of the job's labelled records")
    c.add_argument("--main", type=Path, default=Path("runs/main"), help="a finished scripts/run_main.py --out")
    c.add_argument("--out", type=Path, default=None, help="default: <main>_capacity")
    c.add_argument("--tiny", type=Path, default=Path("artifacts/tiny"))
    c.add_argument("--steps", type=int, default=1500)
    c.add_argument("--lr", type=float, default=1e-3)
    e = sub.add_parser("count-errors", help="kinds of mistakes on the counting test questions")
    e.add_argument("--model", type=Path, required=True, help="a Hugging Face checkpoint directory")
    e.add_argument("--data", type=Path, default=Path("runs/main/data"))
    args = ap.parse_args(argv)
    return {"overfit": overfit, "position": position, "vision": vision, "capacity": capacity,
            "count-errors": count_errors}[args.cmd](args)


if __name__ == "__main__":
    main()
