"""vLLM rollout engine: a colocated ``vllm.LLM`` that samples from the student's current weights.

Requests are built from the processors' :class:`PromptInputs`: text-only prompts go in as token ids;
prompts with images or video go in as the chat-template text plus ``multi_modal_data`` (vLLM expands
the vision placeholders itself, from the same images and frames our processors read). Returned
log-probs are vLLM's processed ones (after temperature and the logit bias that suppresses vision
placeholders), the quantity the trainer computes (RECIPE 7), or NaN when top-k / top-p truncation makes
them another quantity. ``sync_weights`` loads the training engine's weights
into the running model (parameter by parameter, so ZeRO-3 can gather one at a time); ``sleep`` /
``wake_up`` free the engine's memory during the update when it was built with ``enable_sleep_mode``.

Everything that does not need vLLM itself (requests, sampling arguments, output parsing) is a plain
function tested without it; the engine is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .base import RolloutEngine, RolloutOutput, SamplingParams

SUPPRESS_BIAS = -100.0  # vLLM clamps logit biases to [-100, 100]: enough to never sample a placeholder


def vllm_request(prompt) -> dict:
    """One vLLM prompt from :class:`processors.PromptInputs`.

    NOTE: qwen-vl-utils has sized the images and frames already (our processors call the HF processor
    with ``do_resize=False``); vLLM's HF processor call must not resize them again, or a video's frames
    (budgeted over all frames by Qwen3-VL's video processor) come out smaller than the prompt we scored.
    """
    if prompt.multi_modal_data:
        return {"prompt": prompt.text, "multi_modal_data": {k: list(v) for k, v in prompt.multi_modal_data.items()},
                "mm_processor_kwargs": {"do_resize": False}}
    return {"prompt_token_ids": list(prompt.prompt_ids)}


def sampling_kwargs(params: SamplingParams, eos_ids: Iterable[int], suppressed: Iterable[int], seed: int | None = None) -> dict:
    """Keyword arguments of ``vllm.SamplingParams`` matching ours (greedy = temperature 0)."""
    kw = {
        "n": params.n, "max_tokens": params.max_new_tokens, "logprobs": 0, "stop_token_ids": sorted(set(eos_ids)),
        "skip_special_tokens": False, "detokenize": False,
        "temperature": 0.0 if params.greedy else params.temperature,
        "top_p": 1.0 if params.greedy else params.top_p,
        "top_k": 0 if params.greedy or not params.top_k else params.top_k,
    }
    bias = {int(t): SUPPRESS_BIAS for t in suppressed}
    if bias:
        kw["logit_bias"] = bias
    if seed is not None:
        kw["seed"] = seed
    return kw


def exact_logprobs(params: SamplingParams) -> bool:
    """Whether vLLM's processed log-probs are RECIPE 7's quantity for these sampling settings.

    vLLM computes them after temperature and the logit bias (the suppressed vision placeholders) and,
    when top-k or top-p is on, after truncating and renormalising the distribution; RECIPE 7 defines
    every log-prob before truncation. With truncation on, the rollout reports NaN instead (the trainer
    recomputes pi_old in any case, and then leaves ``rollout/logprob_mismatch`` out).
    """
    return params.greedy or (params.top_p >= 1.0 and not params.top_k)


def parse_outputs(outputs, eos_ids: Iterable[int], exact: bool = True) -> RolloutOutput:
    """RolloutOutput (prompt-major) from vLLM ``RequestOutput`` objects, one per prompt in order; log-probs
    are NaN where ``exact`` is False (see ``exact_logprobs``)."""
    eos = set(eos_ids)
    out = RolloutOutput([], [], [], [])
    for i, req in enumerate(outputs):
        for comp in sorted(req.outputs, key=lambda c: c.index):
            ids = list(comp.token_ids)
            lps = [float(step[tok].logprob) if exact and step and tok in step else float("nan")
                   for tok, step in zip(ids, comp.logprobs or [None] * len(ids))]
            out.responses.append(ids)
            out.logprobs.append(lps)
            out.prompt_index.append(i)
            out.finished.append(comp.finish_reason == "stop" or bool(ids and ids[-1] in eos))
    return out


def colocated(engine_kwargs: dict, world_size: int, field: str = "rollout.vllm") -> dict:
    """``vllm.LLM`` arguments for an engine on each of ``world_size`` training processes (``deepspeed --num_gpus
    N``): each rank's engine joins the launcher's process group (``distributed_executor_backend=
    "external_launcher"``, as TRL and verl colocate) instead of building a distributed environment of its own
    inside it.

    NOTE: one engine per rank, each on its own shard of prompts: tensor parallelism across the training ranks
    would need sub-groups of ranks that feed identical prompts, which this does not set up."""
    if world_size <= 1:
        return engine_kwargs
    if engine_kwargs.get("tensor_parallel_size", 1) > 1:
        raise ValueError(f"{field}.tensor_parallel_size: {engine_kwargs['tensor_parallel_size']} with {world_size} "
                         "training processes; a colocated engine runs on each rank's own device "
                         "(tensor_parallel_size 1), or serve a larger teacher (backend: served)")
    return {"distributed_executor_backend": "external_launcher", **engine_kwargs}


class VLLMRollout(RolloutEngine):
    def __init__(self, model_path: str, processor, seed: int = 0, world_size: int = 1, **engine_kwargs):
        """``engine_kwargs`` go to ``vllm.LLM`` (``VLLMEngineConfig.engine_kwargs()`` builds them); ``world_size``:
        the training processes, each with an engine of its own (``colocated``)."""
        # in-process engine core: weight sync reaches the model object directly
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.processor, self.seed = processor, seed
        self.sleep_mode = bool(engine_kwargs.get("enable_sleep_mode"))
        # log-probs after temperature and the logit bias, as the trainer computes them
        self.llm = LLM(model=str(model_path), seed=seed, logprobs_mode="processed_logprobs", **colocated(engine_kwargs, world_size))
        self._step = 0

    def generate(self, prompts, params: SamplingParams) -> RolloutOutput:
        from vllm import SamplingParams as VSP

        proc = self.processor
        self._step += 1
        sp = VSP(**sampling_kwargs(params, proc.eos_token_ids, proc.suppressed_token_ids, self.seed + self._step))
        outs = self.llm.generate([vllm_request(p) for p in prompts], sp, use_tqdm=False)
        return parse_outputs(outs, proc.eos_token_ids, exact_logprobs(params))

    def sync_weights(self, state_dict_iter=None) -> None:
        """Loads ``(name, tensor)`` pairs (Hugging Face names) into the running model, in place, through the
        worker's ``reload_weights`` (the in-process engine core receives the tensors directly)."""
        if state_dict_iter is None:
            return
        # reload_weights handles weights the backend repacked after loading (a plain load_weights cannot);
        # the in-process worker consumes the iterator, so ZeRO-3 gathers one parameter at a time
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state_dict_iter)})
        self.llm.reset_prefix_cache()
        # NOTE: vLLM caches vision-tower outputs per image / video; after new weights they are stale (and vLLM
        # 0.32's scheduler and runner then disagree about what is cached: "Encoder cache miss")
        engine = getattr(self.llm, "llm_engine", None)
        if hasattr(engine, "reset_encoder_cache"):
            engine.reset_encoder_cache()

    def state(self) -> dict:
        # each generate call seeds its requests with seed + step: a resumed run continues the sequence
        return {"step": self._step}

    def load_state(self, state: dict) -> None:
        self._step = int(state.get("step", self._step))

    def sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()
