"""Models by job: ``loading`` (checkpoints and processors from a ModelConfig, frozen-model and compile
helpers, devices), ``scoring`` (response-token log-probs, prompt sharing through the KV cache) and
``vision_cache`` (the features of a frozen vision tower, once per image)."""

from .loading import (CompiledOrEager, check_checkpoint, eval_mode, frozen_config, load_frozen, load_model, load_processor,
                      model_device, reset_generation_config, to_device, whole_weights)
from .scoring import (base_and_head, cache_kwarg, forward_sharing_prompts, hf_model, mrope_module, mrope_positions,
                      prompt_groups, response_logits, response_logprobs, score_response_tokens)
from .vision_cache import VisionFeatureCache, cache_frozen_vision

__all__ = ["CompiledOrEager", "VisionFeatureCache", "base_and_head", "cache_frozen_vision", "cache_kwarg",
           "check_checkpoint", "eval_mode", "forward_sharing_prompts", "frozen_config", "hf_model", "load_frozen", "load_model", "load_processor", "model_device",
           "mrope_module", "mrope_positions", "prompt_groups", "reset_generation_config", "response_logits", "response_logprobs",
           "score_response_tokens", "to_device", "whole_weights"]
