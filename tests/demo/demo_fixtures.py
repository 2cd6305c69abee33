"""The demo server fixture (imported by the demo tests): demo/app.py on a free 127.0.0.1 port with the tiny models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
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


