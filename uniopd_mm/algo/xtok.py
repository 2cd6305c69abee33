"""Cross-tokenizer rewards (RECIPE 7, Cross-tokenizer teachers): the teacher and the student tokenise the same
response text differently. The two tokenisations are aligned on shared character boundaries; a chunk is the
shortest span that both cover exactly; the chunk's signal log pi_T(chunk) - log pi_old(chunk) (sums over its
tokens) is given to every student token in it.
"""

from __future__ import annotations

import torch


def align_chunks(student_ends: torch.Tensor, teacher_ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunk of every student and every teacher token.

    Chunk boundaries are the character offsets where both a student token and a teacher token end; chunk k
    holds the tokens whose end lies in (boundary_{k-1}, boundary_k]. Both tokenisations cover the same text,
    so the last offset is shared; a token past the last shared boundary (a teacher that dropped trailing
    characters) joins the last chunk.

    Args:
        student_ends: [N] end character offset of each student token, increasing.
        teacher_ends: [M] end character offset of each teacher token, increasing.
    Returns:
        ([N] chunk index of each student token, [M] chunk index of each teacher token), 0-based.

    Example: student "ab" "c" "de" (ends 2, 3, 5), teacher "a" "bcd" "e" (ends 1, 4, 5): the only shared end is 5,
    so everything is one chunk. Student "ab" "cde" (2, 5), teacher "a" "b" "cd" "e" (1, 2, 4, 5): shared ends 2
    and 5, chunks {"ab" | "a", "b"} and {"cde" | "cd", "e"}.
    """
    shared = student_ends[torch.isin(student_ends, teacher_ends)]
    if shared.numel() == 0:  # no shared end at all: one chunk
        return torch.zeros_like(student_ends), torch.zeros_like(teacher_ends)
    last = shared.numel() - 1
    student_chunk = torch.searchsorted(shared, student_ends).clamp(max=last)
    teacher_chunk = torch.searchsorted(shared, teacher_ends).clamp(max=last)
    return student_chunk, teacher_chunk


def chunk_totals(values: torch.Tensor, chunks: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """[n_chunks] the sum of ``values`` [M] over each chunk (``chunks`` [M], 0-based)."""
    return torch.zeros(n_chunks, dtype=values.dtype, device=values.device).index_add_(0, chunks, values)


def chunk_reward_logprobs(teacher_chunk_logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                          chunks: torch.Tensor) -> torch.Tensor:
    """[B, T] per-token teacher log-probs whose difference with ``old_logprobs`` is the chunk signal:

        out_t - old_t = log pi_T(c(t)) - sum_{s: c(s) = c(t)} log pi_old(s)          c(t): the chunk of token t

    so the per-token reward r_t = out_t - old_t of the usual OPD machinery (advantages, the log-ratio mask,
    the reverse-KL metric) is the chunk's signal at every student token of the chunk. With one token per
    chunk (identical tokenizers) out = teacher_chunk_logprobs; a chunk both models find equally likely gets 0.

    Args:
        teacher_chunk_logprobs: [B, T] log pi_T of the chunk of each student token (repeated over the chunk).
        old_logprobs: [B, T] the student's log-probs.
        chunks: [B, T] chunk index of each student token within its row; -1 where there is no token.
    """
    b, t = old_logprobs.shape
    valid = chunks >= 0
    rows = torch.arange(b, device=chunks.device)[:, None].expand(b, t)
    flat = (rows * t + chunks.clamp(min=0)).reshape(-1)
    old = torch.where(valid, old_logprobs, torch.zeros_like(old_logprobs)).reshape(-1)
    sums = torch.zeros(b * t, dtype=old_logprobs.dtype, device=old_logprobs.device).index_add_(0, flat, old)
    chunk_old = sums[flat].reshape(b, t)
    return torch.where(valid, teacher_chunk_logprobs - chunk_old + old_logprobs, old_logprobs)
