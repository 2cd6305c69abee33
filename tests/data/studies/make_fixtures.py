"""Render hand-made stored results with the pre-harness report code (scripts/ablate.py, scripts/blindspot.py at
9091856): the expected tables for tests/test_studies.py."""
import argparse, json, os, random, sys, time
from pathlib import Path
sys.path.insert(0, "scripts")
import ablate, blindspot
time.strftime = lambda *a, **k: "2026-12-06"
os.cpu_count = lambda: 2
rng = random.Random(7)
out = Path("tests/data/studies")

def acurve(start, end, n=5, budget=90.0):
    pts = [[0.0, start]]
    for k in range(1, n):
        pts.append([round(budget * k / (n - 1) + rng.random(), 3), round(start + (end - start) * k / (n - 1) + rng.uniform(-.03, .03), 3)])
    return pts

# ablation (held-out settings): 3 seeds, 4 rows
results = []
for seed in (0, 1, 2):
    for name, end in (("sft on teacher answers", 0.55), ("opd", 0.62), ("opd full forward KL", 0.81), ("uni-opd (mm preset)", 0.66)):
        ev = acurve(0.31, end + rng.uniform(-.05, .05))
        sft = name.startswith("sft")
        steps = rng.randint(40, 90)
        rkl = [[s, None if sft else round(1.5 / s, 4)] for s in range(1, steps + 1)]
        inv = [[s, None if sft else round(rng.random() * 0.3, 4)] for s in range(1, steps + 1)]
        results.append({"row": name, "seed": seed, "steps": steps, "acc_start": ev[0][1], "acc_end": ev[-1][1],
                        "acc_best": max(a for _, a in ev), "train_seconds": ev[-1][0], "wall_seconds": 120.0,
                        "label_seconds": 11.5 if sft else 0.0,
                        "reverse_kl_end": None if sft else round(1.5 / steps, 4),
                        "inversion_end": None if sft else round(rng.random() * 0.3, 4),
                        "curves": {"eval": ev, "rkl": rkl, "inversion": inv}})
info = {"teacher": {"accuracy": 0.97, "seconds": 300.0, "per_domain": {}}, "student": {"accuracy": 0.31, "seconds": 20.0, "per_domain": {}}}
args = argparse.Namespace(budget=90.0, seeds="0,1,2", level=1, logratio_threshold="null")
d = out / "ablation"; d.mkdir(parents=True, exist_ok=True)
ablate.write_report(results, info, d, args)
(d / "curves.png").unlink()
payload = json.loads((d / "results.json").read_text())
payload["settings"] = {"budget": 90.0, "seeds": "0,1,2", "level": 1, "logratio_threshold": "null"}
payload["date"], payload["cpu_count"] = "2026-12-06", 2
(d / "results.json").write_text(json.dumps(payload, indent=1))

# blindspot: teacher, sft, opd, grpo x 3 seeds
results = []
for seed in (0, 1, 2):
    for name in ("teacher", "sft on teacher answers", "opd", "uni-opd (mm preset)", "grpo"):
        if name == "teacher":
            results.append({"row": name, "seed": seed, "acc": 0.78, "blind": 0.0, "steps": 0, "inversion": None, "curve": []})
            continue
        c = [[0.0, 0.52, 0.40]]
        for k in range(1, 5):
            c.append([round(30.0 * k + rng.random(), 3), round(0.52 + 0.06 * k + rng.uniform(-.04, .04), 3), round(rng.uniform(0, .6), 3)])
        inv = None if name in ("grpo", "sft on teacher answers") else round(rng.uniform(.1, .4), 4)
        results.append({"row": name, "seed": seed, "acc": c[-1][1], "blind": c[-1][2], "steps": rng.randint(30, 60),
                        "label_seconds": 4.0 if name.startswith("sft") else 0.0, "offline_scoring_seconds": 0.0,
                        "inversion": inv, "mixed_groups": None if inv is None else round(rng.uniform(2, 6), 2), "curve": c})
info = {"teacher": {"accuracy": 0.78, "blind": 0.0, "seconds": 100.0}, "student": {"accuracy": 0.52, "blind": 0.40, "seconds": 10.0}}
d = out / "blindspot"; d.mkdir(parents=True, exist_ok=True)
blindspot.write_report(results, info, d, argparse.Namespace(budget=120.0))
(d / "curves.png").unlink()
payload = json.loads((d / "results.json").read_text())
payload["settings"] = {"budget": 120.0}
payload["date"], payload["cpu_count"] = "2026-12-06", 2
(d / "results.json").write_text(json.dumps(payload, indent=1))
