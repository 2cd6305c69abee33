"""Reports of eval results: one model (report.md, report.png) and several side by side (compare)."""

from __future__ import annotations

import json
from pathlib import Path


def _table(columns: list[tuple[str, dict]]) -> list[str]:
    names: list[str] = []
    for _, res in columns:
        names += [b for b in res.get("benchmarks", {}) if b not in names]
    head = "| benchmark | group | " + " | ".join(label for label, _ in columns) + " |"
    lines = [head, "|---|---|" + "---|" * len(columns)]
    for b in names:
        first = next(res["benchmarks"][b] for _, res in columns if b in res.get("benchmarks", {}))
        cells = []
        for _, res in columns:
            r = res.get("benchmarks", {}).get(b)
            cells.append("-" if r is None else f"{100 * r['score']:.1f}")
        k = f" (avg@{first['k']})" if first["k"] > 1 else ""
        lines.append(f"| {b}{k} | {first['group']} | " + " | ".join(cells) + " |")
        domains = sorted({d for _, res in columns for d in res.get("benchmarks", {}).get(b, {}).get("domains", {})})
        for d in domains:
            cells = [f"{100 * res['benchmarks'][b]['domains'][d]:.1f}" if d in res.get("benchmarks", {}).get(b, {}).get(
                "domains", {}) else "-" for _, res in columns]
            lines.append(f"| &nbsp;&nbsp;{b}/{d} | | " + " | ".join(cells) + " |")
        scores = [a for a, v in first.get("aggregates", {}).items() if isinstance(v, float)]  # counts stay in scores.json
        for a in scores:
            cells = [f"{100 * res['benchmarks'][b]['aggregates'][a]:.1f}" if a in res.get("benchmarks", {}).get(b, {}).get(
                "aggregates", {}) else "-" for _, res in columns]
            lines.append(f"| &nbsp;&nbsp;{b}: {a} | | " + " | ".join(cells) + " |")
    return lines


def _bars(columns: list[tuple[str, dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for _, res in columns:
        names += [b for b in res.get("benchmarks", {}) if b not in names]
    if not names:
        return
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) * max(1, len(columns) / 2)), 4))
    for i, (label, res) in enumerate(columns):
        vals = [100 * res.get("benchmarks", {}).get(b, {}).get("score", float("nan")) for b in names]
        ax.bar([x + i * width for x in range(len(names))], vals, width, label=label)
    ax.set_xticks([x + width * (len(columns) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(columns) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(result: dict, out: Path) -> list[str]:
    label = Path(result["model"]).name or result["model"]
    lines = [f"Model `{result['model']}` ({result['family']}), {result['date']}, {result['machine']}.", ""]
    lines += _table([(label, result)])
    for name, msg in result.get("missing", {}).items():
        lines.append(f"\n{name}: not run: {msg}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _bars([(label, result)], out / "report.png", label)
    return lines


def compare(result_dirs: list[Path], out: Path | None = None, labels: list[str] | None = None) -> list[str]:
    """Side-by-side table (and bar chart) of several ``eval/run.py`` result directories."""
    columns = []
    for i, d in enumerate(result_dirs):
        path = Path(d) / "scores.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: not an eval/run.py result directory (no scores.json)")
        res = json.loads(path.read_text())
        columns.append(((labels[i] if labels else None) or Path(d).name, res))
    lines = ["Models: " + "; ".join(f"{label} = `{res['model']}`" for label, res in columns), ""] + _table(columns)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text("\n".join(lines) + "\n")
        _bars(columns, out / "compare.png", "comparison")
    return lines
