"""playbooks/port_forward.yml: the sandbox backend for real, the SSM backend's command and its error.

The sandbox backend is exercised against a network namespace created here (unshare -n) holding a
small HTTP server on its loopback 127.0.0.1:3838 — the shape of a sandbox host: a PID whose netns
the forwarder enters with nsenter. The SSM backend cannot run here (no session-manager-plugin): the
test checks the rendered `aws ssm start-session` command line and the clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard_support import end_forwarders, free_port

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "playbooks" / "port_forward.yml"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


def _run(inventory: Path, run_dir: Path, port: int, state: str, **extra: str) -> subprocess.CompletedProcess:
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-e", f"pf_state={state}"]
    args += ["-e", f"pf_local_port={port}", "-e", f"pf_run_dir={run_dir}"]
    for key, value in extra.items():
        args += ["-e", f"{key}={value}"]
    # JSON results: one line per message (the YAML format folds long lines)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    env.update({k: v for k, v in extra.items() if k == "PATH"})
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _get(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sbw_dashboard/", timeout=10) as resp:
        return resp.status, resp.read().decode()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def fake_dwh(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen]]:
    """A host-like network namespace: HTTP on its own 127.0.0.1:3838, its PID in <run>/dwh.pid."""
    www = tmp_path / "www" / "sbw_dashboard"
    www.mkdir(parents=True)
    (www / "index.html").write_text("<title>SBW clickstream dashboard</title>", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    www_root = tmp_path / "www"
    script = f"ip link set lo up && exec python3 -m http.server --bind 127.0.0.1 3838 --directory {www_root}"
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    (run / "dwh.pid").write_text(f"{proc.pid}\n", encoding="utf-8")
    deadline = time.monotonic() + 30
    probe = "import socket; socket.create_connection(('127.0.0.1', 3838), timeout=1)"
    while subprocess.run(["nsenter", "-t", str(proc.pid), "-n", "python3", "-c", probe]).returncode != 0:
        assert time.monotonic() < deadline and proc.poll() is None, (
            "the namespace's HTTP server did not start"
        )
        time.sleep(0.2)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    role_dwh:\n      hosts:\n        dwh:\n"
        f"          sandbox_run_dir: {run}\n          sbw_port_forward_backend: sandbox\n",
        encoding="utf-8",
    )
    forwards = tmp_path / "forwards"
    try:
        yield inventory, forwards, proc
    finally:
        proc.kill()
        proc.wait()
        end_forwarders(forwards)


def _pid(run_dir: Path, port: int) -> int:
    return int((run_dir / f"dwh-{port}.pid").read_text())


def test_sandbox_forwards_start_coexist_report_and_stop(fake_dwh) -> None:
    inventory, run_dir, server = fake_dwh
    port_a, port_b = free_port(), free_port()

    first = _run(inventory, run_dir, port_a, "started")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (
        f"PORT_FORWARD up, healthy: http://127.0.0.1:{port_a}/sbw_dashboard/ -> dwh:3838 via sandbox"
        in first.stdout
    )
    assert _get(port_a) == (200, "<title>SBW clickstream dashboard</title>")
    pid_a = _pid(run_dir, port_a)

    again = _run(inventory, run_dir, port_a, "started")  # idempotent: the same forwarder
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
    assert _pid(run_dir, port_a) == pid_a

    second = _run(inventory, run_dir, port_b, "started", pf_target="dwh")  # by host name
    assert second.returncode == 0, second.stdout + second.stderr
    assert _get(port_b)[0] == 200 and _get(port_a)[0] == 200

    status = _run(inventory, run_dir, port_a, "status")
    assert status.returncode == 0 and f"PORT_FORWARD up, healthy: http://127.0.0.1:{port_a}/" in status.stdout

    stopped = _run(inventory, run_dir, port_a, "stopped")
    assert stopped.returncode == 0 and f"PORT_FORWARD stopped: dwh on local port {port_a}" in stopped.stdout
    assert not Path(f"/proc/{pid_a}").exists() and not _listening(port_a)
    assert _get(port_b)[0] == 200  # the other forward is untouched
    down = _run(inventory, run_dir, port_a, "status")
    assert (
        down.returncode == 0
        and f"PORT_FORWARD down: no forwarder of dwh on local port {port_a}" in down.stdout
    )

    server.kill()  # the dashboard goes away: the forward is up but not healthy
    server.wait()
    unhealthy = _run(inventory, run_dir, port_b, "status")
    assert "PORT_FORWARD up, NOT healthy" in unhealthy.stdout, unhealthy.stdout
    assert _run(inventory, run_dir, port_b, "stopped").returncode == 0
    assert not _listening(port_b)


def test_sandbox_forward_refuses_a_taken_port(fake_dwh) -> None:
    inventory, run_dir, _ = fake_dwh
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(inventory, run_dir, port, "started")
    assert result.returncode != 0
    assert f"Local port {port} is already in use by another program" in result.stdout
    assert not (run_dir / f"dwh-{port}.pid").exists()


def test_ssm_backend_renders_the_session_command_and_needs_the_plugin(tmp_path: Path) -> None:
    inventory = tmp_path / "aws.yml"
    inventory.write_text(
        "all:\n  children:\n    role_dwh:\n      hosts:\n        i-0123456789abcdef0:\n"
        "          sbw_port_forward_backend: ssm\n          sbw_aws_region: ap-southeast-1\n",
        encoding="utf-8",
    )
    # A PATH without session-manager-plugin, whatever this machine has installed.
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "session-manager-plugin").exists()
    )
    assert shutil.which("session-manager-plugin", path=path) is None
    port = free_port()
    result = _run(inventory, tmp_path / "forwards", port, "started", PATH=path)
    assert result.returncode != 0
    command = (
        "SSM port forward command: aws ssm start-session --region ap-southeast-1 "
        "--target i-0123456789abcdef0 --document-name AWS-StartPortForwardingSession --parameters "
        f"""'{{"portNumber":["3838"],"localPortNumber":["{port}"]}}'"""
    )
    assert json.dumps(command)[1:-1] in result.stdout, result.stdout  # as printed in the JSON result
    assert "session-manager-plugin is not installed on this controller" in result.stdout
    assert not (tmp_path / "forwards" / f"i-0123456789abcdef0-{port}.pid").exists()


@pytest.mark.parametrize("xdg", [True, False], ids=["xdg-runtime-dir", "home-cache"])
def test_an_operator_who_is_not_root_keeps_run_files_in_their_own_directory(xdg: bool) -> None:
    """No pf_run_dir given, run as `nobody`: the run dir is $XDG_RUNTIME_DIR/sbw (or ~/.cache/sbw),
    created by the playbook; never /run (root only; macOS has none)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sbw-pf-nonroot-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        home, runtime = base / "home", base / "xdg"
        for directory in (home, runtime):
            directory.mkdir()
            os.chown(directory, 65534, 65534)
        inventory = base / "aws.yml"
        inventory.write_text(
            "all:\n  children:\n    role_dwh:\n      hosts:\n        i-0123456789abcdef0:\n"
            "          sbw_port_forward_backend: ssm\n",
            encoding="utf-8",
        )
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            # nobody's passwd home is /nonexistent, which the local connection's remote tmp would use.
            "ANSIBLE_REMOTE_TMP": str(home / ".ansible" / "tmp"),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            **({"XDG_RUNTIME_DIR": str(runtime)} if xdg else {}),
        }
        args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-e", "pf_state=status"]
        # Modules on localhost run with the system Python: this machine's venv interpreter lives under
        # /root (0700), which `nobody` cannot execute; an operator's own venv has no such limit.
        args += ["-e", "ansible_python_interpreter=/usr/bin/python3"]
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "PORT_FORWARD down: no forwarder of i-0123456789abcdef0 on local port 3838" in result.stdout
        run_dir = (runtime / "sbw" if xdg else home / ".cache" / "sbw") / "port-forward"
        assert run_dir.is_dir() and run_dir.stat().st_uid == 65534
        assert run_dir.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(base, ignore_errors=True)
