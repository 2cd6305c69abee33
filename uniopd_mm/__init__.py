"""uniopd_mm: multimodal on-policy distillation with the Uni-OPD recipe.

Importing the package is cheap and needs none of deepspeed, vllm or gradio; engines import their
backends lazily, inside the implementation that is chosen.
"""

__version__ = "0.1.0"
