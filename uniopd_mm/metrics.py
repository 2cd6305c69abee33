"""Metric sinks (JSONL, TensorBoard, Weights & Biases when installed) and stage timers."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path


class Timer:
    """``with timer("rollout"): ...`` records seconds under ``time/rollout``."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"time/{name}"] = self.times.get(f"time/{name}", 0.0) + time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out, self.times = self.times, {}
        return out


class MetricsLogger:
    """Appends one JSON line per step to ``metrics.jsonl``; mirrors scalars to TensorBoard / W&B."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, wandb: bool = False,
                 project: str = "uniopd_mm", run_name: str = "run", config: dict | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out_dir) / "tb"))
            except ImportError:
                self.tb = None
        self.wandb = None
        if wandb:
            try:
                import wandb as wb

                self.wandb = wb.init(project=project, name=run_name, config=config or {})
            except ImportError:
                self.wandb = None

    def truncate_after(self, step: int) -> None:
        """Drops rows logged after ``step`` (a fresh start, or a resume after a kill)."""
        if self.path.exists():
            keep = [json.dumps(r) for r in read_metrics(self.path) if r.get("step", 0) <= step]
            self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, step: int, metrics: dict) -> None:
        clean = {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else (None if isinstance(v, float) else v))
                 for k, v in metrics.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": step, **clean}) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                if self.tb is not None:
                    self.tb.add_scalar(k, float(v), step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a truncated last line, from a kill, is ignored)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_report(out: Path, lines: list[str], data) -> None:
    """A benchmark's report: the markdown ``lines`` to out/report.md, ``data`` to out/report.json, and
    the lines printed."""
    out = Path(out)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(data, indent=1))
    print("\n".join(lines))
