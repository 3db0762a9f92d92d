"""The local sandbox (playbooks/sandbox.yml + roles/sandbox) on real nspawn hosts.

One sandbox of its own for this module: a unique name (netns, machine and veth names), its own
state/run directories, a free moto port and two hosts in 198.18.0.128/27 (webdb-like public host in
.128/29, dwh-like private host in .136/29), so it never collides with the default sandbox or another
suite. Checks: `present` twice is a no-op, the hosts run systemd and are reachable with nsenter, moto
knows them as tagged EC2 instances (registered at boot: no stacks here) with their transfer bucket,
the private host reaches nothing but its gateway's moto/apt-proxy ports and moto on the sandbox's
AWS service address, a bad sandbox_state fails naming the variable, and `absent` leaves nothing
behind. Runs in the `sandbox` xdist group like every nspawn suite.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.ansible_support import LOCAL_CONTROLLER, play_recap
from tests.service_support import free_port

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("sandbox")]

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO_ROOT / "playbooks" / "sandbox.yml"
PUBLIC = {"cidr": "198.18.0.130/29", "gateway": "198.18.0.129"}
PRIVATE = {"cidr": "198.18.0.138/29", "gateway": "198.18.0.137"}
APT_PROXY_PORT = 3142  # the machine-wide shared apt proxy (roles/sandbox defaults)
AWS_ADDRESS = "198.18.0.228"  # its AWS service address (198.18.0.224/29, docs/development.md)


@dataclass(frozen=True)
class Sandbox:
    """A running test sandbox: its inventory and where its pieces live."""

    name: str
    inventory: Path
    state_dir: Path
    run_dir: Path
    moto_port: int

    def run(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run playbooks/sandbox.yml against this sandbox's inventory."""
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        }
        cmd = [
            str(REPO_ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            str(self.inventory),
            str(PLAYBOOK),
            *extra,
        ]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
        if check and result.returncode != 0:
            raise AssertionError(
                f"sandbox.yml {extra} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def pid(self, host: str) -> int:
        """The guest's PID 1 as written by the sandbox."""
        return int((self.run_dir / f"{host}.pid").read_text().strip())

    def netns(self, host: str) -> str:
        return f"{self.name}-{host}"


def _write_inventory(path: Path, name: str, state_dir: Path, run_dir: Path, moto_port: int) -> None:
    def host(spec: dict[str, str], route_out: bool, ec2_name: str, role: str) -> dict[str, object]:
        return {
            "sandbox_host_address": spec["cidr"],
            "sandbox_host_gateway": spec["gateway"],
            "sandbox_host_route_out": route_out,
            "sandbox_host_apt_proxy": True,
            "sandbox_host_ec2_name": ec2_name,
            "sandbox_host_role": role,
        }

    inventory = {
        "all": {
            "vars": {
                "sandbox_name": name,
                "sandbox_state_dir": str(state_dir),
                "sandbox_run_dir": str(run_dir),
                "sandbox_moto_port": moto_port,
                # Without the stacks: the hosts registered as EC2 instances at boot.
                "sandbox_ec2_register": True,
                "sandbox_ssm_endpoint_port": free_port(),
                "sandbox_aws_address": AWS_ADDRESS,
            },
            "hosts": {"localhost": LOCAL_CONTROLLER},
            "children": {
                "sandbox": {
                    "vars": {
                        "ansible_connection": "community.docker.nsenter",
                        "ansible_nsenter_pid": (
                            "{{ lookup('file', sandbox_run_dir ~ '/' ~ inventory_hostname ~ '.pid') }}"
                        ),
                    },
                    "children": {
                        "role_webdb": {"hosts": {"webdb": host(PUBLIC, True, f"{name}_WebDB", "webdb")}},
                        "role_dwh": {"hosts": {"dwh": host(PRIVATE, False, f"{name}_ShinyDWH", "dwh")}},
                    },
                }
            },
        }
    }
    path.mkdir(parents=True)
    (path / "hosts.yml").write_text(json.dumps(inventory, indent=2))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A test sandbox brought up once for the module; `absent` again at the end whatever happened."""
    base = tmp_path_factory.mktemp("sandbox")
    name = f"sbwt{uuid.uuid4().hex[:6]}"
    box = Sandbox(name, base / "inventory", base / "state", base / "run", free_port())
    _write_inventory(box.inventory, name, box.state_dir, box.run_dir, box.moto_port)
    try:
        box.run()
        yield box
    finally:
        box.run("-e", "sandbox_state=absent", check=False)


def _probe(pid: int, targets: list[tuple[str, int]]) -> dict[str, str]:
    """From inside the guest's network namespace, try a TCP connection to each target."""
    script = (
        "import json, socket, sys\n"
        "out = {}\n"
        "for host, port in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        out[f'{host}:{port}'] = 'connected'\n"
        "    except OSError as exc:\n"
        "        out[f'{host}:{port}'] = type(exc).__name__ + ': ' + str(exc)\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        ["nsenter", "--target", str(pid), "--net", "/usr/bin/python3", "-c", script, json.dumps(targets)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def _controller_address() -> str:
    """A global IPv4 address of the root namespace outside the sandbox range (e.g. eth0's)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    for line in out.stdout.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("198.18."):
            return address
    return "127.0.0.1"


def test_hosts_boot_with_systemd_and_answer_over_nsenter(sandbox: Sandbox) -> None:
    for host in ("webdb", "dwh"):
        pid = sandbox.pid(host)
        state = subprocess.run(
            ["nsenter", "--target", str(pid), "--all", "systemctl", "is-system-running"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert state in {"running", "degraded"}, (host, state)
        hostname = subprocess.run(
            ["nsenter", "--target", str(pid), "--all", "hostname"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert hostname == host
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [
            str(REPO_ROOT / ".venv/bin/ansible"),
            "-i",
            str(sandbox.inventory),
            "sandbox",
            "-m",
            "ansible.builtin.ping",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_present_twice_changes_nothing(sandbox: Sandbox) -> None:
    recap = play_recap(sandbox.run().stdout)["localhost"]
    assert recap["changed"] == 0
    assert recap["failed"] == 0


def test_moto_knows_the_hosts_as_tagged_ec2_instances(sandbox: Sandbox) -> None:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=f"http://127.0.0.1:{sandbox.moto_port}",
        region_name="ap-southeast-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    found = ec2.describe_instances(Filters=[{"Name": "tag:Project", "Values": ["SBW_Project"]}])
    tags = [
        {t["Key"]: t["Value"] for t in i["Tags"]}
        for r in found["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] == "running"
    ]
    by_role = {t["Role"]: t["Name"] for t in tags}
    assert by_role == {"webdb": f"{sandbox.name}_WebDB", "dwh": f"{sandbox.name}_ShinyDWH"}
    # Every tag inventory/aws_ec2.yml composes from, and the transfer bucket they name exists.
    bucket = f"{sandbox.name}-ssm-transfer"
    assert all(t["SsmTransferBucket"] == bucket and t["Project"] == "SBW_Project" for t in tags), tags
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{sandbox.moto_port}",
        region_name="ap-southeast-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.head_bucket(Bucket=bucket)


def test_private_host_reaches_only_its_gateway_services(sandbox: Sandbox) -> None:
    # A listener on the private gateway address but on a port the sandbox does not forward.
    with socket.socket() as stray:
        stray.bind((PRIVATE["gateway"], 0))
        stray.listen()
        stray_port = stray.getsockname()[1]
        outcome = _probe(
            sandbox.pid("dwh"),
            [
                (PRIVATE["gateway"], sandbox.moto_port),  # moto: allowed
                (PRIVATE["gateway"], APT_PROXY_PORT),  # apt proxy (TEMPORARY package path): allowed
                (PRIVATE["gateway"], stray_port),  # anything else on the gateway: dropped
                (AWS_ADDRESS, sandbox.moto_port),  # moto on the AWS service address: routed, allowed
                (PUBLIC["cidr"].split("/")[0], 22),  # the public host: no route
                (PUBLIC["gateway"], sandbox.moto_port),  # the public subnet's gateway: no route
                (_controller_address(), 22),  # the controller's own address: no route
            ],
        )
    gw = PRIVATE["gateway"]
    assert outcome[f"{gw}:{sandbox.moto_port}"] == "connected"
    assert outcome[f"{gw}:{APT_PROXY_PORT}"] == "connected"
    assert outcome[f"{gw}:{stray_port}"] != "connected"
    assert outcome[f"{AWS_ADDRESS}:{sandbox.moto_port}"] == "connected"
    others = {k: v for k, v in outcome.items() if not k.startswith((f"{gw}:", f"{AWS_ADDRESS}:"))}
    assert all("unreachable" in v.lower() for v in others.values()), others
    routes = subprocess.run(
        ["ip", "-n", sandbox.netns("dwh"), "route", "show", "default"], capture_output=True, text=True
    )
    assert routes.stdout.strip() == ""
    # The public host has its way out: a default route via its gateway, and reaches moto there.
    routes = subprocess.run(
        ["ip", "-n", sandbox.netns("webdb"), "route", "show", "default"], capture_output=True, text=True
    )
    assert f"via {PUBLIC['gateway']}" in routes.stdout
    assert _probe(sandbox.pid("webdb"), [(PUBLIC["gateway"], sandbox.moto_port)]) == {
        f"{PUBLIC['gateway']}:{sandbox.moto_port}": "connected"
    }


def test_bad_sandbox_state_fails_naming_the_variable(sandbox: Sandbox) -> None:
    result = sandbox.run("-e", "sandbox_state=sideways", check=False)
    assert result.returncode != 0
    assert "sandbox_state" in result.stdout
    assert "sideways" in result.stdout


def _processes() -> dict[int, str]:
    procs: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                procs[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return procs


def _ppid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s*(\d+)", status, re.MULTILINE).group(1))


def test_absent_leaves_nothing_behind(sandbox: Sandbox) -> None:
    # Everything the sandbox started, by PID: guests' PID 1 and their systemd-nspawn, moto, forwarders.
    pids = [int(p.read_text().split()[0]) for p in sandbox.run_dir.glob("*.pid")]
    pids += [_ppid(sandbox.pid(host)) for host in ("webdb", "dwh")]
    before = {pid: cmd for pid, cmd in _processes().items() if pid in pids}
    assert len(before) == len(set(pids)) >= 2 + 2 + 1 + 4  # 2 guests, 2 nspawn, moto, 4 forwarders

    result = sandbox.run("-e", "sandbox_state=absent")
    assert play_recap(result.stdout)["localhost"]["failed"] == 0

    after = _processes()
    assert [pid for pid, cmd in before.items() if after.get(pid) == cmd] == []
    assert not any(sandbox.name in cmd for cmd in after.values())
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert sandbox.name not in netns
    lo = subprocess.run(["ip", "-br", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert f"{AWS_ADDRESS}/32" not in lo
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert PUBLIC["gateway"] + "/" not in addrs
    assert PRIVATE["gateway"] + "/" not in addrs
    assert not sandbox.state_dir.exists()
    assert not sandbox.run_dir.exists()
    assert not Path(f"/run/sbw-sandbox-apt-proxy/users/{sandbox.name}").exists()
    # A second absent is a no-op.
    assert play_recap(sandbox.run("-e", "sandbox_state=absent").stdout)["localhost"]["changed"] == 0
