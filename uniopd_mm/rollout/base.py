"""The rollout interface: prompts in, n sampled responses per prompt out, with their log-probs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    greedy: bool = False
    logprobs: bool = True  # return the sampled tokens' log-probs (evaluation does not need them)


@dataclass
class RolloutOutput:
    """Responses in prompt-major order: prompt i's samples are rows i*n .. i*n+n-1."""

    responses: list[list[int]]          # token ids, cut after the first EOS (EOS included)
    logprobs: list[list[float]]         # the rollout engine's own log-probs of those tokens ([] per response
                                        # without SamplingParams.logprobs)
    prompt_index: list[int]             # which prompt each response answers
    finished: list[bool] = field(default_factory=list)  # stopped on EOS (else truncated)


class RolloutEngine:
    """Samples responses. ``sync_weights`` pushes the trained weights in (a no-op when shared)."""

    def generate(self, prompts, params: SamplingParams) -> RolloutOutput:
        raise NotImplementedError

    def sync_weights(self, state_dict_iter=None) -> None:
        return None

    def sleep(self) -> None:
        """Free memory until :meth:`wake_up` (engines that hold their own copy of the weights)."""
        return None

    def wake_up(self) -> None:
        return None

    def state(self) -> dict:
        """What a checkpoint keeps of the engine (a vLLM engine's seed counter), JSON-serialisable."""
        return {}

    def load_state(self, state: dict) -> None:
        return None
