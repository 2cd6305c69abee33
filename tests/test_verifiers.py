"""Verifiers on known cases, and the code sandbox against hostile programs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from uniopd_mm.data import Sample
from uniopd_mm.verifiers import (verifier_for, verify, verify_choice, verify_code, verify_math, verify_numeric,
                                 verify_string)
from uniopd_mm.verifiers.extract import choice_letter, last_boxed
from uniopd_mm.verifiers.sandbox import run_program


@pytest.mark.parametrize("response, answer, verdict", [
    ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", True),
    ("<answer>1/2</answer>", "\\frac{1}{2}", True),
    ("... which gives 0.5", "1/2", True),
    ("\\boxed{\\sqrt{4}}", "2", True),
    ("the total is 41", "42", False),
    ("I do not know", "42", None),
])
def test_math(response, answer, verdict):
    assert verify_math(response, answer) is verdict


def test_boxed_nesting():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"


@pytest.mark.parametrize("text, letter", [
    ("Answer: B", "B"), ("(C) is right", "C"), ("D.", "D"), ("the answer is (a)", "A"), ("\\boxed{E}", "E"),
    ("B", "B"), ("I think the answer is H", "H"), ("no idea", None),
])
def test_choice_letters(text, letter):
    assert choice_letter(text) == letter


def test_choice_by_option_text():
    assert verify_choice("It is a triangle.", "C", {"options": ["circle", "square", "triangle"]}) is True
    assert verify_choice("Answer: A", "C") is False
    assert verify_choice("hmm", "C") is None


def test_numeric_and_string():
    assert verify_numeric("about 3.14159", "3.1416", {"rel_tol": 1e-4}) is True
    assert verify_numeric("12%", "0.12") is True
    assert verify_numeric("5", "0") is False
    assert verify_string("The Eiffel Tower!", "eiffel tower") is True
    assert verify_string("\\boxed{Paris}", "paris") is True
    assert verify_string("London", "paris") is False


def test_dispatch_by_domain_and_meta():
    assert verifier_for("shapes-count") == "synthetic"
    assert verifier_for("math500") == "math" and verifier_for("code_contests") == "code"
    assert verifier_for("anything", {"verifier": "numeric"}) == "numeric"
    s = Sample(id="1", messages=[], answer="3", domain="shapes-count")
    assert verify(s, "red: square square circle, so 3") is True
    assert verify(Sample(id="2", messages=[], answer=None, domain="math"), "\\boxed{1}") is None
    assert verify(Sample(id="3", messages=[], answer="1", domain="poetry"), "1") is None


def test_code_stdin_stdout_and_asserts():
    tests = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = "```python\na, b = map(int, input().split())\nprint(a - b)\n```"
    assert verify_code(good, None, {"tests": tests}) is True
    assert verify_code(bad, None, {"tests": tests}) is False
    fn = "```python\ndef add(a, b):\n    return a + b\n```"
    check = "def check(f):\n    assert f(1, 2) == 3\n    assert f(-1, 1) == 0\n"
    assert verify_code(fn, None, {"tests": check, "entry_point": "add"}) is True
    assert verify_code(fn.replace("a + b", "a * b"), None, {"tests": check, "entry_point": "add"}) is False
    assert verify_code("no code here", None, {"tests": tests}) is None


def _alive_children() -> int:
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit()
               and "uniopd-sandbox" in (p / "cmdline").read_bytes().decode(errors="ignore") if (p / "cmdline").exists())


HOSTILE = {
    "infinite loop": ("while True:\n    pass\n", "timeout"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "error"),
    "subprocess": ("import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > /tmp/pwned'])\n", "error"),
    "huge allocation": ("x = bytearray(8 * 1024**3)\n", "memory"),
    "huge output": ("while True:\n    print('x' * 1000)\n", "output_limit"),
    "network": ("import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=1)\n", "error"),
    "write outside": ("open({target!r}, 'w').write('pwned')\n", "error"),
    "delete outside": ("import os\nos.remove({victim!r})\n", "error"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).fork()\n", "error"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_are_contained(name, tmp_path):
    target, victim = tmp_path / "outside.txt", tmp_path / "victim.txt"
    victim.write_text("keep me")
    code, expected = HOSTILE[name]
    code = code.format(target=str(target), victim=str(victim))
    t0 = time.perf_counter()
    res = run_program(code, timeout=3.0, cpu_seconds=3, memory_mb=256, max_output=1 << 16)
    assert time.perf_counter() - t0 < 10
    assert res.status == expected, (res.status, res.stderr[-500:])
    assert not res.ok
    assert not target.exists() and victim.read_text() == "keep me" and not Path("/tmp/pwned").exists()
    assert len(res.stdout) <= 1 << 16
    # judged incorrect when it is the answer to a code task
    assert verify_code(f"```python\n{code}\n```", None, {"tests": [{"input": "", "output": "ok"}], "timeout": 3}) is False
    time.sleep(0.2)
    assert _alive_children() == 0


def test_sandbox_allows_its_own_directory():
    res = run_program("open('scratch.txt', 'w').write('fine')\nprint(open('scratch.txt').read())\n")
    assert res.ok and res.stdout.strip() == "fine"
    assert os.environ.get("HOME") != "/nonexistent"  # the parent environment is untouched
