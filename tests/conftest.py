"""Session fixtures: tiny models and synthetic data built locally, once per test run.

Markers: ``slow`` (skipped unless --runslow or UNIOPD_RUN_SLOW=1), ``gpu`` (skipped without CUDA),
``vllm`` (skipped where vllm is not importable); each skip says why. ``faults`` marks every test
under tests/faults (run by default; ``-m faults`` runs the suite alone).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("UNIOPD_RUN_SLOW") == "1"
    has_cuda = False
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "faults" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.faults)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow or UNIOPD_RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device on this machine"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm: not installed here (see `make test-vllm`)"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Every tiny preset, built once (about 10 s)."""
    from uniopd_mm.tiny import PRESET_GROUPS, make_tiny_models

    out = tmp_path_factory.mktemp("tiny")
    make_tiny_models(out, PRESET_GROUPS["all"], progress=False)
    return out


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory) -> Path:
    """The real-conditions presets (``uniopd_mm.tiny_real``: Qwen's 151,936-token vocabulary, the checkpoints'
    generation configs and templates), built once (about 10 s, 400 MB)."""
    from uniopd_mm.tiny_real import make_real_models

    out = tmp_path_factory.mktemp("tiny_real")
    make_real_models(out)
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset with every domain. ``UNIOPD_TEST_DATA`` names one built elsewhere with the
    same spec (``scripts/gpu_check.sh``: the GPU machine has no PyAV to write the videos)."""
    from uniopd_mm.synthetic import SyntheticSpec, generate

    if os.environ.get("UNIOPD_TEST_DATA"):
        return Path(os.environ["UNIOPD_TEST_DATA"])
    out = tmp_path_factory.mktemp("synthetic")
    generate(SyntheticSpec(n_train=48, n_test=12, levels=(1, 2)), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_samples(synth_dir):
    from uniopd_mm.data import load_jsonl

    return load_jsonl(synth_dir / "train.jsonl", strict=True)


@pytest.fixture(scope="session")
def tiny_processor_options():
    from uniopd_mm.config import ProcessorConfig

    return ProcessorConfig(image_min_pixels=28 * 28, image_max_pixels=224 * 224,
                           video_min_pixels=28 * 28, video_max_pixels=112 * 112, fps=2.0)


TINY_PIXELS = {"image_min_pixels": 784, "image_max_pixels": 50176, "video_min_pixels": 784,
               "video_max_pixels": 12544, "fps": 2.0}


def tiny_config(tiny_dir, data_dir, out_dir, student="qwen2_vl-student", teacher="qwen2_vl-teacher",
                family="qwen2_vl", teacher_family=None, overrides=()):
    """A Config on the tiny models and a synthetic dataset; a few fast defaults."""
    from uniopd_mm.config import load_config

    base = {
        "name": "test", "output_dir": str(out_dir), "seed": 0,
        "student": {"path": str(tiny_dir / student), "family": family, "processor": TINY_PIXELS},
        "teacher": {"path": str(tiny_dir / teacher), "family": teacher_family or family, "processor": TINY_PIXELS},
        "data": {"train_path": str(data_dir / "train.jsonl"), "test_path": str(data_dir / "test.jsonl")},
        "rollout": {"n": 2, "max_new_tokens": 12},
        "train": {"steps": 2, "prompts_per_step": 6, "micro_batch_size": 6, "lr": 1e-3, "warmup_steps": 0},
        "logging": {"progress": False, "tensorboard": False},
    }
    return load_config(None, list(overrides), base=base)


# -- the demo server (tests/demo) ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def demo_server(tiny_dir, tmp_path_factory):
    from uniopd_mm.synthetic import SyntheticSpec, generate

    data = tmp_path_factory.mktemp("demo_data")
    generate(SyntheticSpec(n_train=2, n_test=4, domains=("shapes-color", "video-color"), levels=(0,)), data,
             progress=False)
    port = free_port()
    log = open(data / "server.log", "w")
    # DEMO_STUDENT / DEMO_TEACHER (checkpoint paths) replace the tiny models, e.g. for the README screenshot
    student = os.environ.get("DEMO_STUDENT") or tiny_dir / "qwen2_vl-student"
    teacher = os.environ.get("DEMO_TEACHER") or tiny_dir / "qwen2_vl-teacher"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "demo" / "app.py"), "--no-discover", "--model",
         f"student={student}", "--model", f"teacher={teacher}",
         "--student", "student", "--teacher", "teacher", "--examples", str(data / "test.jsonl"), "--port", str(port),
         "--max-upload-mb", "0.05", "--max-video-seconds", "1", "--max-new-tokens", "16"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    import httpx

    for _ in range(120):
        if proc.poll() is not None:
            pytest.fail("demo exited: " + (data / "server.log").read_text()[-3000:])
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        pytest.fail("demo did not come up: " + (data / "server.log").read_text()[-3000:])
    yield {"url": url, "data": data, "port": port}
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


# -- the algo tests' device (tests/algo) ------------------------------------------------------------
# Every algo / loss test runs once per device: the CPU always, CUDA where present (each module says
# ``pytestmark = pytest.mark.usefixtures("algo_device")``). The tensors a test file builds (``torch.tensor``,
# ``randn``, ``zeros`` ... called from a file of tests/algo) are put on the device; tensors that
# ``uniopd_mm.algo`` builds itself keep torch's default device (the CPU), as they do in a training run.
# So a buffer that an algo function creates without taking the device from its inputs meets a CUDA
# input and fails on the GPU run of these tests, as it would in training.
ALGO_TESTS = str(Path(__file__).resolve().parent / "algo")
FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.arange, torch.empty,
             torch.randn, torch.rand, torch.randint, torch.randperm, torch.linspace, torch.eye}


class TensorsOn(TorchFunctionMode):
    """Factory calls made from a file of tests/algo land on ``device``; all other calls are untouched."""

    def __init__(self, device: str):
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in FACTORIES and "device" not in kwargs and sys._getframe(1).f_code.co_filename.startswith(ALGO_TESTS):
            if kwargs.get("generator") is not None:  # a CPU generator draws on the CPU; then move the result
                return func(*args, **kwargs).to(self.device)
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def algo_device(request):
    if request.param == "cpu":
        yield "cpu"
        return
    with TensorsOn(request.param):
        yield request.param
