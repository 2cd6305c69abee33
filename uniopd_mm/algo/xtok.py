"""Cross-tokenizer projection of teacher log-probabilities onto student tokens (README, "Cross-tokenizer")."""

from __future__ import annotations

import torch


def project_logprobs(teacher_ends: torch.Tensor, teacher_logprobs: torch.Tensor,
                     student_spans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps teacher token log-probs onto student tokens through character offsets.

    Rule: student token i (characters ``(start_i, end_i]`` of the response text) receives the sum of
    the log-probs of the teacher tokens whose end offset e satisfies start_i < e <= end_i. Every
    teacher token ends inside exactly one student span (the spans tile the text), so the total
    log-probability of the response is preserved. A student token inside which no teacher token
    ends gets 0 and mask 0 (its probability is carried by the token where the teacher token ends).

    Args:
        teacher_ends: [M] end character offset of each teacher token.
        teacher_logprobs: [M] the teacher's log-probs of its tokens.
        student_spans: [N, 2] (start, end) character offsets of the student tokens, contiguous.
    Returns:
        ([N] projected log-probs, [N] mask: 1 where at least one teacher token ends).
    """
    n = student_spans.shape[0]
    ends = student_spans[:, 1].contiguous()
    # index of the student token whose (start, end] holds each teacher end offset
    idx = torch.searchsorted(ends, teacher_ends.clamp(min=1), right=False).clamp(max=n - 1)
    out = torch.zeros(n, dtype=teacher_logprobs.dtype, device=teacher_logprobs.device).index_add_(0, idx, teacher_logprobs)
    mask = torch.zeros(n, device=teacher_logprobs.device).index_add_(0, idx, torch.ones_like(teacher_logprobs, dtype=torch.float32)) > 0
    return out, mask.float()
