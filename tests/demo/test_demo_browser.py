"""One browser test: Debian's chromium (installed with apt-get if missing) loads the demo headless,
runs an example from the test split, finds both answers and both heat maps on the page, and saves a
screenshot (DEMO_SCREENSHOT=path also copies it there, e.g. docs/demo.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900)
        path = shutil.which("chromium")
    assert path, "chromium is not installed and apt-get could not install it"
    return path


@pytest.mark.slow
def test_browser_runs_an_example(demo_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    first_id = json.loads((demo_server["data"] / "test.jsonl").read_text().splitlines()[0])["id"]
    shot = tmp_path / "demo.png"
    with sync_playwright() as p:
        # the flags keep chromium off the network this machine does not have (no background connections)
        flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(demo_server["url"])
        page.get_by_label("example from the test split").click()
        page.get_by_role("option", name=first_id).click()
        expect(page.get_by_label("prompt")).not_to_have_value("", timeout=30_000)
        page.get_by_role("button", name="Generate both").click()
        for side in ("student", "teacher"):
            expect(page.locator(f"#{side}-heatmap .tok").first).to_be_visible(timeout=120_000)
            expect(page.locator(f"#{side}-verdict textarea")).to_have_value(
                re.compile(r"reference: "), timeout=30_000)
        answers = [page.locator(f"#{side}-answer textarea").input_value() for side in ("student", "teacher")]
        assert all(isinstance(a, str) for a in answers)
        tips = page.locator("#student-heatmap .tok").first.get_attribute("title")
        assert "log pi_T - log pi_S" in tips
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("DEMO_SCREENSHOT"):
        Path(os.environ["DEMO_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, os.environ["DEMO_SCREENSHOT"])
