"""The sandbox's Session Manager for a test: the SSM endpoint stand-in (root, as the sandbox runs it) and
a directory holding the plugin stand-in under the real plugin's name.

A port forward then runs exactly as on AWS (`aws ssm start-session`, playbooks/port_forward.yml) with
two environment variables changed: AWS_ENDPOINT_URL_SSM and PATH (``SsmStandIn.env``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.service_support import free_port

VENV_BIN = Path(sys.executable).parent


@dataclass
class SsmStandIn:
    url: str
    plugin_dir: Path
    hosts_file: Path

    def env(self, path: str) -> dict[str, str]:
        """What differs from an AWS run: the SSM endpoint, and the plugin first on PATH."""
        return {"AWS_ENDPOINT_URL_SSM": self.url, "PATH": f"{self.plugin_dir}:{path}"}

    def connect(self, instance_id: str, pid_file: Path) -> None:
        """Register a host (its PID file) under an instance id, as the sandbox does."""
        hosts = json.loads(self.hosts_file.read_text())
        hosts[instance_id] = str(pid_file)
        self.hosts_file.write_text(json.dumps(hosts))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def ssm_stand_in(
    directory: Path, moto_url: str, plugin: Path = VENV_BIN / "sbw-session-manager-plugin"
) -> Iterator[SsmStandIn]:
    """Start the endpoint on a free port in front of moto (it looks an unknown target up in moto's EC2,
    by the instance's Name tag, and refuses it with TargetNotConnected)."""
    directory.mkdir(parents=True, exist_ok=True)
    hosts_file = directory / "ssm-hosts.json"
    hosts_file.write_text("{}")
    plugin_dir = directory / "sandbox-bin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "session-manager-plugin").symlink_to(plugin)
    plugin_dir.chmod(0o755)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sbw_ops.ssm_session",
        "--port",
        str(port),
        "--moto-url",
        moto_url,
    ]
    log = (directory / "ssm-endpoint.log").open("w")
    proc = subprocess.Popen([*argv, "--hosts-file", str(hosts_file)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert time.monotonic() < deadline and proc.poll() is None, "the SSM endpoint did not start"
            time.sleep(0.1)
        yield SsmStandIn(f"http://127.0.0.1:{port}", plugin_dir, hosts_file)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
