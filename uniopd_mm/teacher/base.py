"""The teacher interface: score the student's response tokens under the teacher's own prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TeacherScores:
    logprobs: torch.Tensor                    # [B, T] log pi_T of the response tokens (0 where padded or failed)
    failed: torch.Tensor                      # [B] bool: scoring failed; the sample is masked whole
    reasons: list[str | None] = field(default_factory=list)  # why each failed sample failed
    topk_ids: torch.Tensor | None = None      # [B, T, K] the teacher's top-k tokens
    topk_logprobs: torch.Tensor | None = None  # [B, T, K] their log-probs
    full_logprobs: torch.Tensor | None = None  # [B, T, V] when requested (local teachers)
    token_mask: torch.Tensor | None = None    # [B, T] 1 where the teacher scored the token (None: all)
    # [B, T] cross-tokenizer teachers: the chunk of each student token (-1: none), with ``logprobs`` holding the
    # chunk's total at each of its tokens (algo.xtok); None with a shared vocabulary
    chunks: torch.Tensor | None = None

    @classmethod
    def empty(cls, n: int, width: int) -> "TeacherScores":
        """Nothing scored yet: zero log-probs and token mask [n, width], no failure, no reasons."""
        return cls(torch.zeros(n, width), torch.zeros(n, dtype=torch.bool), [None] * n,
                   token_mask=torch.zeros(n, width))


# what a bad record raises while a teacher prepares or scores it (DataError is a ValueError; so are a model's
# complaints about its inputs): that record's rollouts fail, the step goes on. Anything else (out of memory, a
# programming error) stops the run: masking it would drop the longest responses first and hide the cause.
RECORD_ERRORS = (ValueError,)


class TeacherScorer:
    name: str = "teacher"

    def score(self, samples, responses: list[list[int]], topk: int = 0, full: bool = False) -> TeacherScores:
        """``samples[i]`` is the record behind ``responses[i]`` (token ids in the student's vocabulary)."""
        raise NotImplementedError
