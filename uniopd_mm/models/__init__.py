"""Models by job: ``loading`` (checkpoints and processors from a ModelConfig, frozen-model and compile
helpers, devices) and ``scoring`` (response-token log-probs, prompt sharing through the KV cache)."""

from .loading import (CompiledOrEager, check_checkpoint, frozen_config, load_frozen, load_model, load_processor,
                      model_device, to_device, whole_weights)
from .scoring import (base_and_head, cache_kwarg, forward_sharing_prompts, hf_model, mrope_module, mrope_positions,
                      prompt_groups, response_logits, response_logprobs, score_response_tokens)

__all__ = ["CompiledOrEager", "base_and_head", "cache_kwarg", "check_checkpoint", "forward_sharing_prompts",
           "frozen_config", "hf_model", "load_frozen", "load_model", "load_processor", "model_device",
           "mrope_module", "mrope_positions", "prompt_groups", "response_logits", "response_logprobs",
           "score_response_tokens", "to_device", "whole_weights"]
