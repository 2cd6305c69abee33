"""Runs untrusted Python programs: a subprocess in a fresh temporary directory with CPU-time,
wall-time, memory and output-size limits, and an audit hook that refuses network access, process
creation, native code (ctypes) and any write outside the directory.

The audit hook is installed by a guard script before the program runs and cannot be removed by
it (PEP 578). Limits are OS resource limits on the child (RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE);
stdout and stderr go to files in the temporary directory, so a flood of output hits RLIMIT_FSIZE
instead of the parent's memory. The whole process group is killed at the wall-time limit.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GUARD = r'''
import os, sys
_ROOT = os.path.realpath(os.getcwd())
_BLOCKED_MODULES = {"ctypes", "_ctypes", "cffi", "mmap", "_posixsubprocess", "multiprocessing"}
_BLOCKED_EVENTS = {
    "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.kill", "os.killpg",
    "subprocess.Popen", "pty.spawn", "ctypes.dlopen", "os.setuid", "os.chroot", "resource.setrlimit",
    "sys.remote_exec", "sys.addaudithook",
}
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "")
    except Exception:
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event in _BLOCKED_EVENTS:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args and str(args[0]).split(".")[0] in _BLOCKED_MODULES:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open" and args:
        path, mode = args[0], args[1] if len(args) > 1 else "r"
        flags = args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writing and not isinstance(path, int) and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the working directory is not allowed")
    if event in _PATH_EVENTS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")

sys.addaudithook(_hook)
sys.argv = ["main.py"]
_code = open("main.py").read()
exec(compile(_code, "main.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class RunResult:
    status: str  # ok | error | timeout | memory | output_limit
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _limits(cpu_seconds: int, memory_mb: int, max_output: int):
    def apply():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_program(code: str, stdin: str = "", timeout: float = 5.0, cpu_seconds: int = 5, memory_mb: int = 512,
                max_output: int = 1 << 20) -> RunResult:
    """Runs ``code`` (Python source) with ``stdin``; never raises for anything the program does."""
    with tempfile.TemporaryDirectory(prefix="uniopd-sandbox-") as tmp:
        d = Path(tmp)
        (d / "main.py").write_text(code)
        (d / "_guard.py").write_text(GUARD)
        (d / "stdin.txt").write_text(stdin)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONIOENCODING": "utf-8", "no_proxy": "*"}
        t0 = time.perf_counter()
        with open(d / "stdin.txt", "rb") as fin, open(d / "stdout.txt", "wb") as fout, open(d / "stderr.txt", "wb") as ferr:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "_guard.py"], cwd=tmp, stdin=fin, stdout=fout,
                                    stderr=ferr, env=env, preexec_fn=_limits(cpu_seconds, memory_mb, max_output))
            try:
                proc.wait(timeout=timeout)
                status = None
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        seconds = time.perf_counter() - t0
        out = (d / "stdout.txt").read_bytes()[:max_output].decode("utf-8", "replace")
        err = (d / "stderr.txt").read_bytes()[:max_output].decode("utf-8", "replace")
    rc = proc.returncode
    if status is None:
        if rc == -signal.SIGXFSZ or (rc != 0 and "File too large" in err):
            status = "output_limit"
        elif rc == -signal.SIGXCPU or rc == -signal.SIGKILL:
            status = "timeout"
        elif rc != 0 and "MemoryError" in err:
            status = "memory"
        else:
            status = "ok" if rc == 0 else "error"
    return RunResult(status, rc, out, err, seconds)
