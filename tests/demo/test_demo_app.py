"""The Gradio demo, served on 127.0.0.1 by `demo/app.py` with the tiny models: every endpoint through
gradio_client and the heat map's values checked against the scorers. Its refusals (oversized upload,
overlong video, paths the browser made up) are in tests/faults/test_demo_faults.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_binds_localhost_only(demo_server):
    import psutil

    listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == demo_server["port"]]
    assert listening == ["127.0.0.1"]


def test_pick_example_and_compare(demo_server):
    ids = [json.loads(line)["id"] for line in (demo_server["data"] / "test.jsonl").read_text().splitlines()]
    c = client(demo_server["url"])
    prompt, image, video, reference = c.predict(ids[0], api_name="/pick_example")
    assert prompt and reference and (image or video)
    out = c.predict("student", "teacher", "", None, None, reference, ids[0], 0.0, 1.0, 12, 0, api_name="/compare")
    s_text, s_heat, s_verdict, t_text, t_heat, t_verdict = out
    assert isinstance(s_text, str) and isinstance(t_text, str)
    for heat, verdict in ((s_heat, s_verdict), (t_heat, t_verdict)):
        deltas = [float(x) for x in re.findall(r'data-delta="(-?[\d.]+)"', heat)]
        assert deltas and "log pi_T - log pi_S" in heat
        assert f"reference: {reference}" in verdict and verdict.split(" ")[0] in {"correct", "incorrect", "cannot"}


def test_heatmap_values_are_the_scorers_difference(tiny_dir, synth_samples):
    sys.path.insert(0, str(ROOT / "demo"))
    import core

    cache = core.ModelCache()
    sample = synth_samples[0]
    res = core.compare(tiny_dir / "qwen2_vl-student", tiny_dir / "qwen2_vl-teacher", sample, cache, max_new_tokens=6)
    s_model, s_proc = cache.get(tiny_dir / "qwen2_vl-student")
    t_model, t_proc = cache.get(tiny_dir / "qwen2_vl-teacher")
    ids = core.generate(s_model, s_proc, sample, 0.0, 1.0, 6, 0)
    expected = [t - s for t, s in zip(core.score(t_model, t_proc, sample, ids, s_proc.tokenizer),
                                      core.score(s_model, s_proc, sample, ids, s_proc.tokenizer))]
    shown = [float(x) for x in re.findall(r'data-delta="(-?[\d.]+)"', res["student"]["heatmap"])]
    assert shown == pytest.approx(expected, abs=1e-3)
    assert res["student"]["mean_delta"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
