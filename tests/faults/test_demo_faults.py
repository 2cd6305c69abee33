"""Faults at the demo's door (`demo/app.py` on 127.0.0.1, tiny models): an oversized upload, an
overlong video, and requests naming server files (an absolute path, a path climbing out of gradio's
upload folder with ``..``) are refused with an error, never served."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_oversized_upload_is_refused(demo_server, tmp_path):
    import numpy as np
    from gradio_client import handle_file
    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 0.05 * 2**20
    with pytest.raises(Exception, match=r"(?i)limit|too large|exceed"):
        client(demo_server["url"]).predict("student", "teacher", "What color?", handle_file(str(big)), None, "", "",
                                           0.0, 1.0, 4, 0, api_name="/compare")


def test_overlong_video_is_refused(demo_server):
    from gradio_client import handle_file

    video = next(p for p in (demo_server["data"] / "videos").glob("*.mp4"))  # 4 frames at 2 fps = 2 s > 1 s
    with pytest.raises(Exception, match=r"over the 1 s limit"):
        client(demo_server["url"]).predict("student", "teacher", "What color?", None, handle_file(str(video)),
                                           "", "", 0.0, 1.0, 4, 0, api_name="/compare")


@pytest.mark.parametrize("how", ["absolute", "traversal"])
def test_a_path_from_the_browser_is_refused(demo_server, how):
    """A hand-made request naming a server file instead of uploading one gets an error, never the file."""
    import httpx

    secret = demo_server["data"] / "secret.png"
    secret.write_text("TOP-SECRET-42")
    if how == "traversal":  # looks like an upload, climbs out of the upload folder
        depth = len(Path(tempfile.gettempdir()).parts) + 4
        path = f"{tempfile.gettempdir()}/gradio/{'../' * depth}{str(secret).lstrip('/')}"
    else:
        path = str(secret)
    payload = {"data": ["student", "teacher", "What color?", {"path": path, "meta": {"_type": "gradio.FileData"}},
                        None, "", "", 0.0, 1.0, 4, 0]}
    base = demo_server["url"] + "gradio_api/call/compare"
    r = httpx.post(base, json=payload, timeout=30)
    if r.status_code != 200:  # refused at the door
        assert 400 <= r.status_code < 500
        return
    event = r.json()["event_id"]
    stream = httpx.get(f"{base}/{event}", timeout=60).text
    assert "event: error" in stream and "event: complete" not in stream and "TOP-SECRET" not in stream


@pytest.mark.parametrize("route", ["gradio_api/file={path}", "gradio_api/file=/tmp/gradio/../..{path}", "file={path}"])
def test_server_files_are_not_downloadable(demo_server, route):
    import httpx

    secret = demo_server["data"] / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    r = httpx.get(demo_server["url"] + route.format(path=secret), timeout=30)
    assert r.status_code >= 400 and "TOP-SECRET" not in r.text
