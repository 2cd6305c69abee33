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
    from_teacher: list[bool] = field(default_factory=list)  # sampled by the teacher (rollout.teacher_share)


def merge_prompt_major(student: RolloutOutput, teacher: RolloutOutput) -> RolloutOutput:
    """One prompt-major RolloutOutput from the student's and the teacher's samples of the same prompts: prompt i's
    student samples, then its teacher samples (``from_teacher`` marks them). Log-probs are the student's where it
    sampled and empty for the teacher's (they are not the student's pi_old)."""
    out = RolloutOutput([], [], [], [], [])
    rows: dict[int, list[tuple[RolloutOutput, int]]] = {}
    for src in (student, teacher):
        for j, i in enumerate(src.prompt_index):
            rows.setdefault(i, []).append((src, j))
    for i in sorted(rows):
        for src, j in rows[i]:
            out.responses.append(src.responses[j])
            out.logprobs.append(src.logprobs[j] if src is student else [])
            out.prompt_index.append(i)
            out.finished.append(src.finished[j])
            out.from_teacher.append(src is teacher)
    return out


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
