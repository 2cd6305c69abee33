"""Pure tensor math of the recipe. Imports torch and the standard library only: no
torch.distributed, transformers, deepspeed or vllm. Global quantities (token or sequence counts
across ranks) come in as arguments; nothing here communicates."""
