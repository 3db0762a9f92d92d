"""Start and stop a real `moto_server` subprocess on 127.0.0.1 (the local stand-in for AWS APIs).

One implementation used by the demo (`sbw_ops.platform`) and by the pytest fixtures
(`tests/fixtures/moto.py`). The server is started with port 0 so the kernel picks a free port
(no race between choosing a port and binding it); the real port is read from the server's log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_RUNNING_ON = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


class MotoServerError(RuntimeError):
    """moto_server did not come up (the message carries the tail of its log)."""


@dataclass(frozen=True)
class MotoServer:
    """A running moto_server process: its endpoint URL, PID and log file."""

    endpoint_url: str
    pid: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop exactly this process (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
            return
        stop_pid(self.pid, timeout)


def moto_server_executable() -> str:
    """The `moto_server` script of the running interpreter's venv (falls back to PATH)."""
    candidate = Path(sys.executable).with_name("moto_server")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("moto_server")
    if not found:
        raise MotoServerError("moto_server not found: install moto[server] (make venv)")
    return found


def _log_tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""


def _is_ready(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2) as response:  # noqa: S310 (http://127.0.0.1)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_moto_server(log_path: Path, timeout: float = 60.0, detach: bool = False) -> MotoServer:
    """Start moto_server on 127.0.0.1 with a kernel-chosen free port and wait until it answers.

    `log_path` receives the server's output. `detach=True` starts it in its own session so it
    outlives the caller (the demo); otherwise it is a plain child process (the tests).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [moto_server_executable(), "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=detach,
        )
    deadline = time.monotonic() + timeout
    endpoint_url = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MotoServerError(f"moto_server exited with {process.returncode}: {_log_tail(log_path)}")
        if not endpoint_url:
            match = _RUNNING_ON.search(_log_tail(log_path, 100_000))
            if match:
                endpoint_url = f"http://127.0.0.1:{match.group(1)}"
        if endpoint_url and _is_ready(endpoint_url):
            return MotoServer(endpoint_url, process.pid, log_path, None if detach else process)
        time.sleep(0.05)
    process.kill()
    process.wait(5)
    raise MotoServerError(f"moto_server not ready after {timeout:.0f}s: {_log_tail(log_path)}")


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM one process by PID, wait for it, SIGKILL if it lingers. False when it was not running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:  # not our child: poll until it is gone (or a zombie left to its parent)
            if not _running(pid):
                return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
