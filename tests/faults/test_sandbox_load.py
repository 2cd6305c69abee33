"""The code sandbox under load: every hostile program of the recipe issue twice, all at once, next to
honest programs: each hostile one is contained (same verdicts as alone, nothing written or deleted
outside, no process left), each honest one still gives its right answer."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_verifiers import HOSTILE, _alive_children

from uniopd_mm.verifiers.sandbox import run_program

HONEST = "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a * b)\n"


def test_hostile_programs_all_at_once(tmp_path):
    jobs = []
    for copy in range(2):
        for name, (code, expected) in HOSTILE.items():
            target, victim = tmp_path / f"outside-{copy}-{len(jobs)}.txt", tmp_path / f"victim-{copy}-{len(jobs)}.txt"
            victim.write_text("keep me")
            jobs.append((name, code.format(target=str(target), victim=str(victim)), expected, target, victim))
    honest = [(a, b) for a, b in zip(range(3, 9), range(11, 17))]

    def hostile(job):
        name, code, expected, *_ = job
        return run_program(code, timeout=6.0, cpu_seconds=3, memory_mb=256, max_output=1 << 16)

    def fair(ab):
        return run_program(HONEST, stdin=f"{ab[0]} {ab[1]}\n", timeout=60.0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs) + len(honest)) as pool:
        bad_futures = [pool.submit(hostile, j) for j in jobs]  # every program is started before any is awaited
        good_futures = [pool.submit(fair, ab) for ab in honest]
        bad, good = [f.result() for f in bad_futures], [f.result() for f in good_futures]
    seconds = time.perf_counter() - t0
    for (name, _, expected, target, victim), res in zip(jobs, bad):
        assert res.status == expected and not res.ok, (name, res.status, res.stderr[-300:])
        assert not target.exists() and victim.read_text() == "keep me"
        assert len(res.stdout) <= 1 << 16
    for (a, b), res in zip(honest, good):
        assert res.ok and res.stdout.strip() == str(a * b), (res.status, res.stderr[-300:])
    assert not Path("/tmp/pwned").exists()
    time.sleep(0.5)
    assert _alive_children() == 0
    print(f"{len(jobs)} hostile + {len(honest)} honest programs at once: {seconds:.1f} s")
