"""Metric sinks (JSONL, TensorBoard, Weights & Biases when installed) and stage timers."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch


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


# -- a step's metrics: local sums, reduced over ranks with ``all_reduce`` (the engine's) ---------------
def pad_rows(rows: list[list[float]], value: float = 0.0) -> torch.Tensor:
    """[len(rows), longest] float32, each row padded with ``value``."""
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), width), value, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of ``x`` where ``mask``: a -inf or NaN outside the mask never leaks in (``inf * 0`` is NaN)."""
    return torch.where(mask.bool(), x, torch.zeros_like(x)).sum().item()


def repeated_ngram_frac(ids: list[int], n: int = 4) -> float:
    """The share of a response's token n-grams that repeat an earlier n-gram of the same response (0 for a response
    shorter than n + 1): a looping response ("60 * 3 = 180. 180 * 3 = ...") scores high, a plain answer 0."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if len(grams) > 1 else 0.0


def rollout_sums(ro, old_logprobs, teacher_logprobs, response_mask, loss_mask, ok, outcomes, ratio_keep) -> dict:
    """This rank's sums behind the step's rollout, teacher and reward metrics (``step_metrics`` reduces them)."""
    # the rollout engine's own log-probs, NaN where it gave none (the teacher's samples under rollout.teacher_share),
    # as wide as the step's responses (the longest may be one without them)
    rollout_lp = torch.full_like(old_logprobs, float("nan"))
    given = pad_rows(ro.logprobs, float("nan"))[:, : old_logprobs.shape[1]]
    rollout_lp[:, : given.shape[1]] = given
    finite = torch.isfinite(rollout_lp) & response_mask.bool()
    counted, scored = loss_mask.bool(), response_mask.bool() & ok.bool()[:, None]
    own = ro.from_teacher or [False] * len(ro.responses)
    return {
        "sum_rkl": masked_sum(old_logprobs - teacher_logprobs, counted), "n_counted": counted.sum().item(),
        "n_tokens": response_mask.sum().item(), "n_resp": float(len(ro.responses)),
        # the student's own samples (rollout.teacher_share adds the teacher's, which say nothing of the student)
        "n_student": float(sum(not t for t in own)),
        "n_truncated": float(sum(not f for f, t in zip(ro.finished, own) if not t)),
        "sum_repeat": sum(repeated_ngram_frac(r) for r, t in zip(ro.responses, own) if not t),
        # the rollout engine's own log-probs, where it gives them (NaN: not RECIPE 7's quantity)
        "mismatch": torch.where(finite, (rollout_lp - old_logprobs).abs(), torch.zeros_like(old_logprobs)).sum().item(),
        "n_mismatch": finite.sum().item(),
        "n_failed": float((ok == 0).sum().item()),
        "n_correct": float(sum(c is True for c, t in zip(outcomes, own) if not t)),
        "n_verified": float(sum(c is not None for c, t in zip(outcomes, own) if not t)),
        # tokens of scored responses left out of the loss: by the log-ratio mask alone, and by any mask
        # (log ratio, online balancing, margin mask, a stripped response prefix)
        "n_logratio_dropped": float((scored & ~ratio_keep.bool()).sum().item()),
        "n_masked": float((scored & ~counted).sum().item()),
    }


def step_metrics(sums: dict, all_reduce, with_mismatch: bool = True, with_teacher: bool = True) -> dict[str, float]:
    """``rollout_sums`` of every rank, summed, as the logged metrics. ``with_teacher=False`` (outcome-only GRPO, the
    constant control: no teacher ran): no reverse KL, rather than a 0 that was never measured."""
    keys = sorted(sums)
    g = dict(zip(keys, all_reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64)).tolist()))
    n_resp = max(g["n_resp"], 1.0)
    out = {
        "opd/reverse_kl": g["sum_rkl"] / max(g["n_counted"], 1.0),
        "opd/counted_tokens": g["n_counted"],
        "opd/logratio_dropped_tokens": g["n_logratio_dropped"],
        "opd/masked_tokens": g["n_masked"],
        "teacher/failed": g["n_failed"],
        "teacher/failed_frac": g["n_failed"] / n_resp,
        "response/length_mean": g["n_tokens"] / n_resp,
        "response/truncated_frac": g["n_truncated"] / max(g["n_student"], 1.0),
        "response/repeat_frac": g["sum_repeat"] / max(g["n_student"], 1.0),
        "rollout/teacher_samples": g["n_resp"] - g["n_student"],
        "response/tokens": g["n_tokens"],
        "reward/accuracy": g["n_correct"] / max(g["n_verified"], 1.0),
        "reward/verified_frac": g["n_verified"] / max(g["n_student"], 1.0),
        "reward/unknown_frac": 1.0 - g["n_verified"] / max(g["n_student"], 1.0),
    }
    if with_mismatch and g["n_mismatch"]:
        out["rollout/logprob_mismatch"] = g["mismatch"] / g["n_mismatch"]
    if not with_teacher:
        del out["opd/reverse_kl"]
    return out


def per_teacher_metrics(names: list[str], routes: list[str], old_logprobs, teacher_logprobs, loss_mask, ok,
                        all_reduce) -> dict[str, float]:
    """Reverse KL, failures and rollouts per teacher, over all ranks (with more than one teacher)."""
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        rows = torch.tensor([r == name for r in routes], dtype=torch.bool)
        counted = loss_mask.bool() & rows[:, None]
        vec = all_reduce(torch.tensor([masked_sum(old_logprobs - teacher_logprobs, counted), counted.sum().item(),
                                       float(((ok == 0) & rows).sum().item()), float(rows.sum().item())],
                                      dtype=torch.float64))
        out[f"teacher/{name}/reverse_kl"] = (vec[0] / vec[1].clamp(min=1)).item()
        out[f"teacher/{name}/failed"] = vec[2].item()
        out[f"teacher/{name}/rollouts"] = vec[3].item()
    return out


def rejects_metrics(counts: dict[str, int], error_names: list[str], truncated: int, truncated_teacher: int,
                    all_reduce) -> dict[str, float]:
    """Records rejected so far, by error type, and prompts cut to max_prompt_tokens, summed over ranks."""
    local = [float(counts.get(n, 0)) for n in error_names] + [float(truncated), float(truncated_teacher)]
    vec = all_reduce(torch.tensor(local, dtype=torch.float64)).tolist()
    out = {"data/rejected": sum(vec[: len(error_names)])}
    out.update({f"data/rejected_{n}": v for n, v in zip(error_names, vec) if v})
    out["data/truncated_prompts"], out["data/truncated_teacher_prompts"] = vec[len(error_names):]
    return out
