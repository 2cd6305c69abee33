"""TRL's trainers as rows of a study (run from .venv-bench, where TRL 1.14.2 is installed: `make bench-env`).

A TRL row trains the same student from the same teacher on the same prompts (``n`` copies of each, as TRL draws one
completion per prompt), with the same response cap, temperature and learning rate, for the same seconds of training
(evaluation not counted), and is evaluated by the same greedy held-out evaluation as our rows, on the model in
memory: its curve is comparable point for point. TRL's configs turn gradient checkpointing on by default, which
also turns off the KV cache in their generation; it is off here, as in ours.
"""

from __future__ import annotations

import time
from pathlib import Path

TRL_ROWS = ("trl DistillationTrainer", "trl GKDTrainer")


def budget_callback(budget: float, every: int, evaluate, curve: list):
    """A TrainerCallback: counts the seconds of training steps, evaluates every ``every`` steps and at the end of
    the budget (the evaluation's own time not counted), and stops training once ``budget`` seconds are spent."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        seconds, t0 = 0.0, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kw):
            self.seconds += time.perf_counter() - self.t0
            done = self.seconds >= budget
            if done or (every and state.global_step % every == 0):
                curve.append((self.seconds, evaluate(model)))
            if done:
                control.should_training_stop = True
            return control

    return Budget()


def greedy_in_memory(student: Path, test: Path, max_new_tokens: int):
    """``evaluate(model)``: greedy held-out accuracy of a model in memory, through our evaluation (as our rows)."""
    import torch

    from uniopd_mm.data import load_jsonl
    from uniopd_mm.evaluate import evaluate
    from uniopd_mm.models import frozen_config, load_processor
    from uniopd_mm.rollout import make_rollout_engine

    proc, samples = load_processor(frozen_config(student, "text")), load_jsonl(test)

    def run(model) -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            acc = evaluate(make_rollout_engine("hf", model=model, processor=proc, batch_size=32), proc, samples,
                           max_new_tokens)["eval/accuracy"]
        model.train(was)
        return acc

    return run


def run_trl_row(name: str, seed: int, run_dir: Path, args, teacher: Path, train: Path, test: Path,
                start: float) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uniopd_mm.data import load_jsonl

    questions = ["".join(p["text"] for p in s.messages[-1]["content"]) for s in load_jsonl(train)]
    common = dict(output_dir=str(run_dir), max_steps=args.steps or 10**6, learning_rate=args.lr, use_cpu=True,
                  report_to=[], save_strategy="no", logging_steps=10**6, dataloader_num_workers=0, disable_tqdm=True,
                  per_device_train_batch_size=args.prompts * args.n, gradient_accumulation_steps=1, bf16=False,
                  seed=seed, lr_scheduler_type="constant", warmup_steps=0, gradient_checkpointing=False)
    if name == "trl DistillationTrainer":
        from trl import DistillationConfig as Config, DistillationTrainer as Trainer

        rows = [{"prompt": [{"role": "user", "content": q}]} for q in questions for _ in range(args.n)]
        cfg = Config(**common, beta=1.0, temperature=1.0, top_k=0, top_p=1.0, max_completion_length=args.max_new_tokens)
    else:
        from trl.experimental.gkd import GKDConfig as Config, GKDTrainer as Trainer

        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "0"}]}
                for q in questions for _ in range(args.n)]
        cfg = Config(**common, lmbda=1.0, beta=1.0, temperature=1.0, max_new_tokens=args.max_new_tokens, max_length=1024)
    curve = [(0.0, start)]
    torch.manual_seed(seed)
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(args.model),
                      teacher_model=AutoModelForCausalLM.from_pretrained(teacher), args=cfg,
                      train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(args.model),
                      callbacks=[budget_callback(args.budget, args.eval_every,
                                                 greedy_in_memory(args.model, test, args.max_new_tokens), curve)])
    trainer.train()
    return {"row": name, "seed": seed, "acc": curve[-1][1], "steps": trainer.state.global_step, "curve": curve,
            "truncated_first": None, "truncated_last": None, "repeat_last": None, "reverse_kl_last": None,
            "inversion": None}
