"""What the demo computes, without gradio: both models answer one prompt, each answer is scored
token by token by both models, and the per-token OPD signal log pi_teacher - log pi_student is
rendered as an HTML heat map with hover values.

Models come from a server-side registry (name -> checkpoint directory): the browser picks a name and
never sends a filesystem path. Uploads are accepted only from the upload directory the app owns,
below a size limit, and videos only up to a length limit.
"""

from __future__ import annotations

import html
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILY_OF_MODEL_TYPE = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


class Refused(ValueError):
    """A request the demo will not serve (the message says why)."""


@dataclass
class Limits:
    max_upload_mb: float = 20.0
    max_video_seconds: float = 30.0
    max_new_tokens: int = 512
    upload_roots: list[Path] = field(default_factory=list)  # where uploaded files may live


def family_of(path: Path) -> str:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return FAMILY_OF_MODEL_TYPE.get(cfg.get("model_type"), "text")


def discover_models(roots: list[Path]) -> dict[str, Path]:
    """Checkpoints the make-run pipeline and the tiny presets leave behind, by a readable name."""
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        main = root / "runs" / "main"
        if (main / "teacher" / "final" / "config.json").exists():
            found["make-run teacher"] = main / "teacher" / "final"
        if (main / "student" / "final" / "config.json").exists():
            found["make-run student (before OPD)"] = main / "student" / "final"
        ckpts = sorted((main / "opd" / "checkpoints").glob("step_*/hf/config.json"))
        if ckpts:
            found["make-run student (after Uni-OPD)"] = ckpts[-1].parent
        for cfg in sorted((root / "artifacts" / "tiny").glob("*/config.json")):
            found[f"tiny {cfg.parent.name}"] = cfg.parent
    return found


def load_examples(path: Path | None, limit: int = 200) -> dict[str, object]:
    """Records of a test split (the synthetic one by default), by id."""
    if path is None or not Path(path).exists():
        return {}
    from uniopd_mm.data import load_jsonl

    return {s.id: s for s in load_jsonl(path)[:limit]}


class ModelCache:
    """Loaded (model, processor) pairs by path, least recently used dropped first."""

    def __init__(self, size: int = 4):
        self.size, self.items = size, OrderedDict()

    def get(self, path: Path):
        from uniopd_mm.models import load_frozen

        key = str(Path(path).resolve())
        if key not in self.items:
            self.items[key] = load_frozen(key, family_of(path))
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        self.items.move_to_end(key)
        return self.items[key]


def check_upload(path: str | None, limits: Limits, kind: str) -> str | None:
    if not path:
        return None
    p = Path(path).resolve()
    if limits.upload_roots and not any(p.is_relative_to(Path(r).resolve()) for r in limits.upload_roots):
        raise Refused(f"{kind}: only files uploaded through this page are accepted")
    if not p.is_file():
        raise Refused(f"{kind}: the upload is gone; upload it again")
    size_mb = p.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise Refused(f"{kind}: {size_mb:.1f} MB is over the {limits.max_upload_mb:g} MB limit")
    if kind == "video":
        import av

        try:
            with av.open(str(p)) as container:
                stream = container.streams.video[0]
                seconds = float(stream.duration * stream.time_base) if stream.duration else \
                    (container.duration or 0) / 1e6
        except Exception as err:  # noqa: BLE001 - anything av cannot read is refused, not crashed on
            raise Refused(f"video: cannot be read ({type(err).__name__})") from err
        if seconds > limits.max_video_seconds:
            raise Refused(f"video: {seconds:.1f} s is over the {limits.max_video_seconds:g} s limit")
    return str(p)


def build_sample(prompt: str, image: str | None, video: str | None, reference: str | None, example=None):
    from uniopd_mm.data import Sample

    if example is not None and not (image or video or prompt.strip()):
        return example
    parts = ([{"type": "image", "image": image}] if image else []) + ([{"type": "video", "video": video}] if video else [])
    parts.append({"type": "text", "text": prompt})
    meta, domain = {}, "demo"
    if example is not None and reference == example.answer:
        meta, domain = dict(example.meta), example.domain
    elif reference:
        from uniopd_mm.verifiers.extract import to_float

        meta = {"verifier": "math" if to_float(reference) is not None else "string"}
    return Sample(id="demo", messages=[{"role": "user", "content": parts}], answer=reference or None, domain=domain,
                  meta=meta, text_view=getattr(example, "text_view", None))


def generate(model, proc, sample, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> list[int]:
    from uniopd_mm.rollout import SamplingParams, make_rollout_engine

    torch.manual_seed(seed)
    engine = make_rollout_engine("hf", model=model, processor=proc, batch_size=1)
    out = engine.generate([proc.encode_prompt(sample)], SamplingParams(
        n=1, temperature=max(temperature, 1e-6), top_p=top_p, max_new_tokens=max_new_tokens, greedy=temperature == 0))
    return out.responses[0]


def score(model, proc, sample, response: list[int], response_tokenizer) -> list[float]:
    """Per-token log-probs under (model, proc) of ``response`` (ids of ``response_tokenizer``)."""
    from uniopd_mm.teacher import make_teacher

    scorer = make_teacher("hf", model=model, processor=proc, student_tokenizer=response_tokenizer, device="cpu")
    sc = scorer.score([sample], [response])
    if bool(sc.failed[0]):
        raise Refused(f"scoring failed: {sc.reasons[0] if sc.reasons else 'unknown'}")
    return sc.logprobs[0, : len(response)].tolist()


def heat_html(tokenizer, ids: list[int], lp_teacher: list[float], lp_student: list[float], clip: float = 5.0) -> str:
    """Tokens on a red (teacher disagrees: log pi_T < log pi_S) to green (teacher agrees more) scale;
    hovering a token shows its values."""
    spans = []
    for tid, t, s in zip(ids, lp_teacher, lp_student):
        d = t - s
        a = min(abs(d), clip) / clip
        color = f"rgba(220,38,38,{a:.2f})" if d < 0 else f"rgba(22,163,74,{a:.2f})"
        tok = tokenizer.decode([tid])
        tip = f"{tok!r}: log pi_T - log pi_S = {d:+.2f} (log pi_T {t:.2f}, log pi_S {s:.2f})"
        spans.append(f'<span class="tok" data-delta="{d:.3f}" title="{html.escape(tip, quote=True)}" '
                     f'style="background:{color};padding:1px 2px;margin:1px;border-radius:3px;white-space:pre-wrap">'
                     f"{html.escape(tok)}</span>")
    mean = sum(t - s for t, s in zip(lp_teacher, lp_student)) / max(len(ids), 1)
    return (f'<div class="heatmap">{"".join(spans)}</div><div class="heat-summary" style="font-size:12px;color:#555">'
            f"{len(ids)} tokens; mean log pi_T - log pi_S = {mean:+.3f} (red: the teacher finds the token less likely "
            "than the student does; green: more likely)</div>")


def verdict(sample, text: str) -> str:
    if not sample.answer:
        return "no reference answer given"
    from uniopd_mm.verifiers import verify

    v = verify(sample, text)
    return {True: "correct", False: "incorrect", None: "cannot tell (no answer found)"}[v] + f" (reference: {sample.answer})"


def compare(student_path: Path, teacher_path: Path, sample, cache: ModelCache, temperature: float = 0.0,
            top_p: float = 1.0, max_new_tokens: int = 64, seed: int = 0) -> dict:
    """Both models answer; each answer is scored by both; returns texts, heat maps and verdicts."""
    s_model, s_proc = cache.get(student_path)
    t_model, t_proc = cache.get(teacher_path)
    if sample.modality != "text" and (s_proc.view == "text" or t_proc.view == "text") and not sample.text_view:
        raise Refused("a text-only model was picked for a prompt with an image or video (and no text view)")
    out = {}
    for role, (model, proc), (other, oproc) in (("student", (s_model, s_proc), (t_model, t_proc)),
                                               ("teacher", (t_model, t_proc), (s_model, s_proc))):
        ids = generate(model, proc, sample, temperature, top_p, max_new_tokens, seed)
        own = score(model, proc, sample, ids, proc.tokenizer)
        cross = score(other, oproc, sample, ids, proc.tokenizer)
        lp_t, lp_s = (cross, own) if role == "student" else (own, cross)
        text = proc.decode(ids)
        out[role] = {"text": text, "heatmap": heat_html(proc.tokenizer, ids, lp_t, lp_s), "verdict": verdict(sample, text),
                     "tokens": len(ids), "mean_delta": sum(a - b for a, b in zip(lp_t, lp_s)) / max(len(ids), 1)}
    return out


def default_roots() -> list[Path]:
    return [Path(os.getcwd()), ROOT]
