"""Import boundaries: the package imports without optional backends; backends are imported lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("deepspeed", "vllm", "gradio")

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked for the test: ' + name)
sys.meta_path.insert(0, Block())
import uniopd_mm, uniopd_mm.config, uniopd_mm.data, uniopd_mm.synthetic, uniopd_mm.tiny, uniopd_mm.models
import processors, processors.qwen2_vl, processors.qwen2_5_vl, processors.qwen3_vl, processors.text
print('ok')
"""


def test_package_imports_without_optional_backends():
    code = BLOCKER.format(blocked=set(OPTIONAL))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # module level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_optional_backends_are_never_imported_at_module_top():
    offenders = []
    for folder in ("uniopd_mm", "processors", "scripts", "eval"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = _top_level_imports(path) & set(OPTIONAL)
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders


def test_gradio_lives_only_in_demo():
    offenders = [str(p.relative_to(ROOT)) for folder in ("uniopd_mm", "processors", "scripts", "eval")
                 for p in (ROOT / folder).rglob("*.py") if "gradio" in _all_imports(p)]
    assert not offenders


def test_algo_is_pure_tensor_math():
    """uniopd_mm/algo imports torch and the standard library only (no distributed, transformers, ...)."""
    import sys as _sys

    allowed = {"torch", "__future__"} | set(_sys.stdlib_module_names)
    offenders = []
    for path in (ROOT / "uniopd_mm" / "algo").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                if m.split(".")[0] not in allowed or m.startswith("torch.distributed"):
                    offenders.append(f"{path.name}: {m}")
    assert not offenders


def test_only_the_training_engines_use_torch_distributed():
    """Collectives go through the training engine (which puts their tensors on the backend's device):
    no module outside uniopd_mm/training imports or names torch.distributed."""
    offenders = []
    for folder in ("uniopd_mm", "processors", "scripts", "eval", "demo"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.parent.name == "training" and path.parent.parent.name == "uniopd_mm":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                named = (isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names)
                         or isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed")
                         or isinstance(node, ast.Attribute) and node.attr == "distributed"
                         and isinstance(node.value, ast.Name) and node.value.id == "torch")
                if named:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders
