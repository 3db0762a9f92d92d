"""playbooks/port_forward.yml: one backend, SSM through the AWS CLI, run by an operator who is not root.

What runs is what an operator runs on AWS: `aws ssm start-session --document-name
AWS-StartPortForwardingSession` (the AWS CLI from the project's requirements) execs
`session-manager-plugin`. The sandbox's parts stand in for AWS's: the SSM endpoint stand-in
(`python -m sbw_ops.ssm_session`, reached through AWS_ENDPOINT_URL_SSM, started here as root as the
sandbox starts it) and the plugin stand-in, first on PATH as `session-manager-plugin`. The "host" is a
network namespace made here (unshare -n) with the dashboard's shape on its own 127.0.0.1:3838, its
PID file named in the endpoint's hosts file under an instance id: the shape of a sandbox host.

The playbook runs as a throw-away user created here (no root, no /run): its files go to
$XDG_RUNTIME_DIR/sbw or ~/.cache/sbw. This machine's venv interpreter lives under /root (0700), which
another user cannot execute, so that user gets a venv of its own on the system Python that sees the
project's installed packages (as an operator's own venv would hold them): same code, not a copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service_support import free_port
from tests.ssm_support import ssm_stand_in

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "playbooks" / "port_forward.yml"
VENV_BIN = Path(sys.executable).parent
INSTANCE = "i-0a1b2c3d4e5f60718"
PAGE = "<title>SBW clickstream dashboard</title>"


@dataclass
class Operator:
    """The throw-away user, their directories and the environment they run the playbook with."""

    uid: int
    gid: int
    home: Path
    runtime: Path
    bin: Path
    env: dict[str, str]

    def run(self, port: int, state: str, *extra: str, env: dict[str, str] | None = None):
        args = [str(self.bin / "ansible-playbook"), str(PLAYBOOK), "-e", f"pf_state={state}"]
        args += ["-e", f"pf_local_port={port}", *extra]
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *args],
            capture_output=True, text=True, env=env or self.env, cwd=REPO, timeout=300, check=False,
        )  # fmt: skip

    @property
    def run_dir(self) -> Path:
        return self.runtime / "sbw" / "port-forward"


def _own_venv(base: Path, owner: tuple[int, int]) -> Path:
    """A venv on the system Python whose site imports the project venv's site-packages (a .pth line),
    with the three entry points the playbook run needs; returns its bin directory."""
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "sbw-project-venv.pth").write_text(f"import site; site.addsitedir({str(purelib)!r})\n")
    for name in ("ansible-playbook", "aws", "sbw-session-manager-plugin"):
        body = (VENV_BIN / name).read_text().split("\n", 1)[1]
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python3'}\n{body}")
        script.chmod(0o755)
    for path in [base, *base.rglob("*")]:
        os.lchown(path, *owner)
    return venv / "bin"


@pytest.fixture(scope="module")
def operator() -> Iterator[Operator]:
    base = Path(tempfile.mkdtemp(prefix="sbw-pf-op-", dir="/var/tmp"))
    name = f"sbwpf{secrets.token_hex(3)}"
    home, runtime = base / "home", base / "xdg"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name], check=True
    )
    try:
        user = pwd.getpwnam(name)
        base.chmod(0o755)
        for directory in (home, runtime):
            directory.mkdir(mode=0o700)
        venv_bin = _own_venv(base, (user.pw_uid, user.pw_gid))
        env = {
            "PATH": f"{venv_bin}:/usr/bin:/bin",
            "HOME": str(home),
            "USER": name,
            "XDG_RUNTIME_DIR": str(runtime),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            # JSON results: one line per message (the YAML format folds long lines).
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        yield Operator(user.pw_uid, user.pw_gid, home, runtime, venv_bin, env)
    finally:
        for run_dir in (runtime / "sbw" / "port-forward", home / ".cache" / "sbw" / "port-forward"):
            _end_sessions(run_dir)
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dwh(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A host-like network namespace: HTTP on its own 127.0.0.1:3838, its PID in a PID file."""
    www = tmp_path / "www"
    (www / "sbw_dashboard").mkdir(parents=True)
    (www / "sbw_dashboard" / "index.html").write_text(PAGE, encoding="utf-8")
    script = f"ip link set lo up && exec python3 -m http.server --bind 127.0.0.1 3838 --directory {www}"
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pid_file = tmp_path / "dwh.pid"
    pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
    deadline = time.monotonic() + 30
    probe = "import socket; socket.create_connection(('127.0.0.1', 3838), timeout=1)"
    while subprocess.run(["nsenter", "-t", str(proc.pid), "-n", "python3", "-c", probe]).returncode != 0:
        assert time.monotonic() < deadline and proc.poll() is None, (
            "the namespace's HTTP server did not start"
        )
        time.sleep(0.2)
    try:
        yield pid_file, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def ssm_endpoint(
    operator: Operator, dwh: tuple[Path, subprocess.Popen], moto_endpoint_url: str
) -> Iterator[str]:
    """The SSM endpoint stand-in knowing one instance, the fake dwh; the operator's environment gets
    AWS_ENDPOINT_URL_SSM and the plugin stand-in first on PATH (the whole sandbox difference)."""
    plain = dict(operator.env)
    plugin = operator.bin / "sbw-session-manager-plugin"
    with ssm_stand_in(operator.home.parent / f"ssm-{secrets.token_hex(3)}", moto_endpoint_url, plugin) as ssm:
        ssm.connect(INSTANCE, dwh[0])
        operator.env.update(ssm.env(plain["PATH"]))
        try:
            yield ssm.url
        finally:
            operator.env.clear()
            operator.env.update(plain)
            _end_sessions(operator.run_dir)


def _end_sessions(run_dir: Path) -> None:
    """Teardown after a failed test: end the sessions whose PID files the playbook left."""
    for pid_file in run_dir.glob("*.pid") if run_dir.exists() else []:
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.killpg(int(pid_file.read_text().strip()), signal.SIGTERM)


def _get(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sbw_dashboard/", timeout=10) as resp:
        return resp.status, resp.read().decode()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _owner(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def test_an_operator_starts_reports_and_stops_ssm_forwards(
    operator: Operator, ssm_endpoint: str, dwh: tuple[Path, subprocess.Popen]
) -> None:
    port_a, port_b = free_port(), free_port()
    target = ["-e", f"pf_target={INSTANCE}"]

    first = operator.run(port_a, "started", *target)
    assert first.returncode == 0, first.stdout + first.stderr
    command = (
        f"SSM port forward command: aws ssm start-session --region ap-southeast-1 --target {INSTANCE} "
        "--document-name AWS-StartPortForwardingSession --parameters "
        f"""'{{"portNumber":["3838"],"localPortNumber":["{port_a}"]}}'"""
    )
    assert json.dumps(command)[1:-1] in first.stdout, first.stdout  # as printed in the JSON result
    assert (
        f"PORT_FORWARD up, healthy: http://127.0.0.1:{port_a}/sbw_dashboard/ -> {INSTANCE}:3838 via ssm"
        in (first.stdout)
    )
    assert _get(port_a) == (200, PAGE)
    # The operator's own files and processes: no root, nothing under /run.
    pid_file = operator.run_dir / f"{INSTANCE}-{port_a}.pid"
    assert operator.run_dir.stat().st_uid == operator.uid and operator.run_dir.stat().st_mode & 0o777 == 0o700
    pid_a = int(pid_file.read_text())
    assert _owner(pid_a) == operator.uid
    assert "start-session" in Path(f"/proc/{pid_a}/cmdline").read_text()

    again = operator.run(port_a, "started", *target)  # idempotent: the same session
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
    assert int(pid_file.read_text()) == pid_a

    second = operator.run(port_b, "started", *target)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _get(port_b)[0] == 200 and _get(port_a)[0] == 200

    status = operator.run(port_a, "status", *target)
    assert status.returncode == 0 and f"PORT_FORWARD up, healthy: http://127.0.0.1:{port_a}/" in status.stdout

    stopped = operator.run(port_a, "stopped", *target)
    assert (
        stopped.returncode == 0
        and f"PORT_FORWARD stopped: {INSTANCE} on local port {port_a}" in stopped.stdout
    )
    assert not Path(f"/proc/{pid_a}").exists() and not _listening(port_a) and not pid_file.exists()
    assert _get(port_b)[0] == 200  # the other forward is untouched
    down = operator.run(port_a, "status", *target)
    assert down.returncode == 0 and f"PORT_FORWARD down: no session of {INSTANCE} on local port {port_a}" in (
        down.stdout
    )

    server = dwh[1]
    server.kill()  # the dashboard goes away: the forward is up but not healthy
    server.wait()
    unhealthy = operator.run(port_b, "status", *target)
    assert "PORT_FORWARD up, NOT healthy" in unhealthy.stdout, unhealthy.stdout
    assert operator.run(port_b, "stopped", *target).returncode == 0
    assert not _listening(port_b)


def test_an_unknown_instance_fails_with_the_services_answer_and_leaves_nothing(
    operator: Operator, ssm_endpoint: str
) -> None:
    port = free_port()
    other = "i-0fffffffffffffff0"
    result = operator.run(port, "started", "-e", f"pf_target={other}")
    assert result.returncode != 0
    assert f"The SSM port forward to {other} did not come up" in result.stdout, result.stdout
    assert "TargetNotConnected" in result.stdout
    assert not (operator.run_dir / f"{other}-{port}.pid").exists() and not _listening(port)


def test_a_taken_port_is_refused(operator: Operator, ssm_endpoint: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = operator.run(port, "started", "-e", f"pf_target={INSTANCE}")
    assert result.returncode != 0
    assert f"Local port {port} is already in use by another program" in result.stdout
    assert not (operator.run_dir / f"{INSTANCE}-{port}.pid").exists()


def test_missing_plugin_or_instance_id_fail_clearly(operator: Operator) -> None:
    port = free_port()
    # The operator's PATH has no session-manager-plugin (the AWS CLI is there).
    env = operator.env
    assert shutil.which("session-manager-plugin", path=env["PATH"]) is None
    no_plugin = operator.run(port, "started", "-e", f"pf_target={INSTANCE}", env=env)
    assert no_plugin.returncode != 0
    assert "session-manager-plugin is not installed on this controller" in no_plugin.stdout, no_plugin.stdout
    assert not (operator.run_dir / f"{INSTANCE}-{port}.pid").exists()

    # An inventory host without an instance id (e.g. a name only): refused before anything runs.
    inventory = operator.home.parent / "named.yml"  # where the operator can read it
    inventory.write_text(
        "all:\n  children:\n    role_dwh:\n      hosts:\n        dwh: {}\n", encoding="utf-8"
    )
    no_id = operator.run(port, "started", "-i", str(inventory))
    assert no_id.returncode != 0
    assert "pf_target=role_dwh (resolved to dwh) has no EC2 instance id" in no_id.stdout, no_id.stdout
    assert not (operator.run_dir / f"dwh-{port}.pid").exists()


def test_without_xdg_runtime_dir_the_run_files_go_to_the_home_cache(operator: Operator) -> None:
    env = {k: v for k, v in operator.env.items() if k != "XDG_RUNTIME_DIR"}
    result = operator.run(3838, "status", "-e", f"pf_target={INSTANCE}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PORT_FORWARD down: no session of {INSTANCE} on local port 3838" in result.stdout
    run_dir = operator.home / ".cache" / "sbw" / "port-forward"
    assert (
        run_dir.is_dir() and run_dir.stat().st_uid == operator.uid and run_dir.stat().st_mode & 0o777 == 0o700
    )
