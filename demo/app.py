"""Gradio demo: a student and a teacher answer the same prompt side by side; under each answer, the
per-token OPD signal log pi_teacher - log pi_student as a heat map (hover a token for its values).

    python demo/app.py [--model NAME=PATH ...] [--examples runs/main/data/test.jsonl]
                       [--host 127.0.0.1 --port 7860 --max-upload-mb 20 --max-video-seconds 30]

Models: the ones given with --model, plus those `make run` leaves behind (runs/main: teacher, student
before and after Uni-OPD; artifacts/tiny presets). The browser picks a model by name; it never sends
a path. Binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "demo"))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import core  # noqa: E402


def build_app(models: dict[str, Path], examples: dict, limits: core.Limits, default_student: str | None = None,
              default_teacher: str | None = None):
    import gradio as gr

    cache = core.ModelCache()
    names = sorted(models)
    if not names:
        raise SystemExit("no models: pass --model NAME=PATH, or run `make run` first")
    student0 = default_student or next((n for n in names if "after" in n), names[0])
    teacher0 = default_teacher or next((n for n in names if "teacher" in n), names[-1])

    def run(student, teacher, prompt, image, video, reference, example_id, temperature, top_p, max_new_tokens, seed):
        try:
            if student not in models or teacher not in models:
                raise core.Refused("pick the models from the lists")
            image = core.check_upload(image, limits, "image")
            video = core.check_upload(video, limits, "video")
            example = examples.get(example_id) if example_id else None
            if not (prompt or "").strip() and example is None:
                raise core.Refused("type a prompt or pick an example")
            sample = core.build_sample(prompt or "", image, video, (reference or "").strip() or None, example)
            res = core.compare(models[student], models[teacher], sample, cache, float(temperature), float(top_p),
                               min(int(max_new_tokens), limits.max_new_tokens), int(seed))
        except core.Refused as err:
            raise gr.Error(str(err)) from err
        s, t = res["student"], res["teacher"]
        return s["text"], s["heatmap"], s["verdict"], t["text"], t["heatmap"], t["verdict"]

    def pick_example(example_id):
        s = examples.get(example_id)
        if s is None:
            return "", None, None, ""
        text = " ".join(p["text"] for m in s.messages for p in m["content"] if p["type"] == "text")
        return text, (s.images or [None])[0], (s.videos or [None])[0], s.answer or ""

    with gr.Blocks(title="uniopd_mm: student vs teacher") as app:
        gr.Markdown("## Student vs teacher\nBoth models answer; under each answer, every token is coloured by "
                    "**log pi_teacher - log pi_student** (the OPD signal): red where the teacher finds the token "
                    "less likely than the student, green where more. Hover a token for its values.")
        with gr.Row():
            student = gr.Dropdown(names, value=student0, label="student")
            teacher = gr.Dropdown(names, value=teacher0, label="teacher")
        with gr.Row():
            with gr.Column(scale=2):
                example = gr.Dropdown([""] + list(examples), value="", label="example from the test split")
                prompt = gr.Textbox(label="prompt", lines=2)
                reference = gr.Textbox(label="reference answer (optional)")
            image = gr.Image(type="filepath", label="image", sources=["upload"])
            video = gr.Video(label="video", sources=["upload"])
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
            max_new = gr.Slider(1, limits.max_new_tokens, value=min(64, limits.max_new_tokens), step=1,
                                label="max new tokens")
            seed = gr.Number(0, precision=0, label="seed")
        go = gr.Button("Generate both", variant="primary")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Student")
                s_text = gr.Textbox(label="student answer", elem_id="student-answer")
                s_heat = gr.HTML(elem_id="student-heatmap")
                s_verdict = gr.Textbox(label="verdict", elem_id="student-verdict")
            with gr.Column():
                gr.Markdown("### Teacher")
                t_text = gr.Textbox(label="teacher answer", elem_id="teacher-answer")
                t_heat = gr.HTML(elem_id="teacher-heatmap")
                t_verdict = gr.Textbox(label="verdict", elem_id="teacher-verdict")
        example.change(pick_example, [example], [prompt, image, video, reference], api_name="pick_example")
        go.click(run, [student, teacher, prompt, image, video, reference, example, temperature, top_p, max_new, seed],
                 [s_text, s_heat, s_verdict, t_text, t_heat, t_verdict], api_name="compare")
    return app


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH of a checkpoint (repeatable)")
    ap.add_argument("--student", default=None, help="name of the student picked at start")
    ap.add_argument("--teacher", default=None, help="name of the teacher picked at start")
    ap.add_argument("--examples", type=Path, default=None,
                    help="JSONL of examples (default: runs/main/data/test.jsonl, else artifacts/synthetic/test.jsonl)")
    ap.add_argument("--no-discover", action="store_true", help="only the --model entries")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--max-upload-mb", type=float, default=20.0)
    ap.add_argument("--max-video-seconds", type=float, default=30.0)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    args = ap.parse_args(argv)
    models = {} if args.no_discover else core.discover_models(core.default_roots())
    for item in args.model:
        name, _, path = item.partition("=")
        if not path or not (Path(path) / "config.json").exists():
            ap.error(f"--model {item!r}: expected NAME=PATH of a checkpoint directory with a config.json")
        models[name] = Path(path)
    ex_path = args.examples or next((p for p in (Path("runs/main/data/test.jsonl"), Path("artifacts/synthetic/test.jsonl"))
                                     if p.exists()), None)
    upload_root = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
    examples = core.load_examples(ex_path)
    example_roots = {str(Path(p).parent) for s in examples.values() for p in s.images + s.videos}
    limits = core.Limits(args.max_upload_mb, args.max_video_seconds, args.max_new_tokens,
                         [upload_root] + [Path(r) for r in example_roots])
    app = build_app(models, examples, limits, args.student, args.teacher)
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 2**20),
        allowed_paths=sorted(example_roots), show_error=True)


if __name__ == "__main__":
    main()
