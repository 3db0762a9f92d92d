"""One dwh host booted from the cached root (the "AMI") with its packages from the signed repository in
its own moto S3, for the suites that need a real host but not the whole sandbox (test_apt_repo_hosts.py,
test_patching_hosts.py). Each suite passes its own /29 of 198.18.0.0/24 (docs/development.md "Address
blocks"), so it never collides with another sandbox; the host has no route out and no apt proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from tests.ansible_support import LOCAL_CONTROLLER
from tests.service_support import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
BUCKET = "clickstream-s3-artifacts"
PREFIX = "repo"
# Module-scoped fixtures run before the autouse fake-credentials fixture: pass them explicitly.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "ap-southeast-1",
}


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        **FAKE_AWS,
    }


@dataclass(frozen=True)
class OneHostSandbox:
    """The running one-host sandbox: inventory, extra vars, moto endpoint, run dir, apt repo dir."""

    inventory: Path
    extra_vars: dict[str, Any]
    endpoint_url: str
    run_dir: Path
    repo_dir: Path

    def playbook(self, path: Path | str, *args: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"),
                "-i",
                str(self.inventory),
                "-e",
                json.dumps({**self.extra_vars, **extra}),
                *args,
                str(path),
            ],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO_ROOT,
            timeout=1500,
            check=False,
        )

    def pid(self) -> int:
        return int((self.run_dir / "dwh.pid").read_text().split()[0])

    def run_in_host(
        self, *cmd: str, net_only: bool = False, timeout: int = 120
    ) -> subprocess.CompletedProcess[str]:
        spaces = ["--net"] if net_only else ["--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd"]
        return subprocess.run(
            ["nsenter", "--target", str(self.pid()), *spaces, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_AWS["AWS_SESSION_TOKEN"],
        )


@contextlib.contextmanager
def one_host_sandbox(state: Path, host_cidr: str, gateway: str) -> Iterator[OneHostSandbox]:
    """Boot the dwh host (playbooks/sandbox.yml, `s3_repo`) in `host_cidr`; afterwards remove it."""
    inventory = state / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO_ROOT / "inventory" / "sandbox" / "group_vars")
    dwh = {
        "sandbox_host_address": host_cidr,
        "sandbox_host_gateway": gateway,
        "sandbox_host_route_out": False,
        "sandbox_host_apt_proxy": False,
        "sandbox_host_ec2_name": "SBW_EC2_ShinyDWH",
        "sandbox_host_role": "dwh",
    }
    hosts = {
        "all": {
            "hosts": {"localhost": LOCAL_CONTROLLER},
            "children": {"sandbox": {"children": {"role_dwh": {"hosts": {"dwh": dwh}}}}},
        }
    }
    (inventory / "hosts.yml").write_text(json.dumps(hosts))
    port = free_port()
    extra = {
        "sandbox_name": f"sbwa{uuid.uuid4().hex[:6]}",
        "sandbox_state_dir": str(state / "state"),
        "sandbox_run_dir": str(state / "run"),
        "sandbox_moto_port": port,
        "sandbox_dwh_package_source": "s3_repo",
        "sbw_apt_repo_dir": str(state / "apt-repo"),
        # The bucket is named, never defaulted (playbooks/tasks/require_facts.yml), and no stacks' facts
        # file of the checkout is read.
        "sbw_artifacts_bucket": BUCKET,
        "sbw_stacks_facts_file": str(state / "no-stacks-facts.yml"),
    }
    sandbox = OneHostSandbox(inventory, extra, f"http://127.0.0.1:{port}", state / "run", state / "apt-repo")
    up = sandbox.playbook(REPO_ROOT / "playbooks" / "sandbox.yml")
    try:
        assert up.returncode == 0, up.stdout[-4000:]
        yield sandbox
    finally:
        down = sandbox.playbook(REPO_ROOT / "playbooks" / "sandbox.yml", sandbox_state="absent")
        assert down.returncode == 0, down.stdout[-4000:]


def create_artifacts_bucket(sandbox: OneHostSandbox) -> Any:
    """The artifacts bucket in the sandbox's moto, with no policy: moto's CloudFormation creates none, so
    apt_repo_publish puts the storage stack's anonymous-read statement on the prefix itself."""
    s3 = sandbox.s3()
    s3.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": FAKE_AWS["AWS_DEFAULT_REGION"]}
    )
    return s3
