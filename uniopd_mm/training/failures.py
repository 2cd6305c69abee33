"""How a step's failures are reported: CUDA out of memory in a stage, a lost peer process."""

from __future__ import annotations

# what to lower when a stage runs out of GPU memory
OOM_ADVICE = {
    "rollout": "rollout.batch_size (sequences per generate call), rollout.n or rollout.max_new_tokens",
    "old_logprobs": "train.micro_batch_size or train.logprob_chunk, or set train.gradient_checkpointing=true",
    "teacher": "teacher.batch_size (default: train.micro_batch_size) or rollout.max_new_tokens, or set "
               "teacher.offload_when_idle=true",
    "update": "train.micro_batch_size, rollout.n or rollout.max_new_tokens, or set train.gradient_checkpointing=true",
    "eval": "rollout.batch_size or rollout.max_new_tokens",
}

# what gloo / NCCL say when a peer process is gone or stuck past the collective timeout
PEER_LOST = ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer", "NCCL communicator")


class StageOutOfMemory(RuntimeError):
    """A CUDA out-of-memory error in one stage of a step, with the settings that bound that stage's memory."""


def oom_message(stage: str, rank: int, step: int, checkpoints, error: Exception) -> str:
    advice = OOM_ADVICE.get(stage, "train.micro_batch_size, rollout.n or rollout.max_new_tokens")
    return (f"rank {rank}, step {step}: CUDA out of memory in the {stage} stage. Lower {advice}; the last complete "
            f"checkpoint is in {checkpoints}. ({str(error).splitlines()[0]})")
