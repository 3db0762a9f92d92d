"""A host's PostgreSQL data outlives the host (issue 16 §1): re-run, then a replaced host, keep the data.

A sandbox of ONE host (`webdb`, from the cached root: the "AMI") in its own /29 (198.18.0.96/29), no moto,
apt through the proxy. Its data volume is the sandbox's stand-in for the EBS volume: the directory
`<sandbox_state_dir>/volumes/webdb`, bound at /var/lib/postgresql, outside the host's root. The
postgresql role runs, a row is written, the role runs again (changed=0, the row is there), the host is
destroyed (root, network, PID 1 gone; the volume kept) and booted again from a fresh root, and the role
runs a third time: the row is there and the cluster is the same one (its system identifier, which
initdb draws anew, did not change), i.e. the package adopted the cluster instead of creating one. Then
a purge and the sandbox's teardown remove the volume.

The AWS path of the role (postgresql_data_volume_id set: wait for the NVMe by-id device, make a filesystem
once, mount by UUID) runs on a second one-host sandbox (198.18.0.104/29) against a loop device standing in
for the EBS volume: the test plays EC2 and udev, making the device node and its
/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id> link in the guest, again after the host is replaced.
~5 min in all; xdist group `sandbox` like every nspawn suite, under `flock /tmp/sbw-hosts.lock` on shared
machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ansible_support import ANSIBLE_PLAYBOOK, LOCAL_CONTROLLER, ansible_env, play_recap

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("sandbox")]

REPO = Path(__file__).resolve().parents[1]
HOST = {
    "name": "webdb",
    "address": "198.18.0.98/29",
    "gateway": "198.18.0.97",
    "route_out": False,
    "apt_proxy": True,
    "data_volume": "/var/lib/postgresql",
}
# The EBS stand-in's host: no directory bound, the role mounts the (loop) block device itself.
EBS_HOST = {**HOST, "address": "198.18.0.106/29", "gateway": "198.18.0.105", "data_volume": ""}
VOLUME_ID = "vol-0123456789abcdef0"
PSQL = ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c"]


@dataclass(frozen=True)
class OneHost:
    state: Path
    inventory: Path
    extra_vars: dict[str, Any]
    host: dict[str, Any]

    @property
    def volume(self) -> Path:
        # The path the pgBackRest restore test deletes to lose a host's data: keep it stable.
        return self.state / "state" / "volumes" / "webdb"

    @property
    def root(self) -> Path:
        return self.state / "state" / "hosts" / "webdb"

    def playbook(self, path: Path, **extra: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                ANSIBLE_PLAYBOOK,
                "-i",
                str(self.inventory),
                "-e",
                json.dumps({**self.extra_vars, **extra}),
                str(path),
            ],
            capture_output=True,
            text=True,
            env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default"),
            cwd=REPO,
            timeout=1200,
            check=False,
        )

    def in_host(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        pid = (self.state / "run" / "webdb.pid").read_text().split()[0]
        return subprocess.run(
            ["nsenter", "--target", pid, "--all", *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def sql(self, query: str) -> str:
        run = self.in_host(*PSQL, query)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()


def _write(path: Path, plays: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(plays))
    return path


@contextmanager
def _sandbox(state: Path, host: dict[str, Any]) -> Iterator[OneHost]:
    inventory = state / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "inventory" / "sandbox" / "group_vars")
    webdb = {f"sandbox_host_{k}": v for k, v in host.items() if k != "name"}
    (inventory / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {"localhost": LOCAL_CONTROLLER},
                    "children": {"sandbox": {"children": {"role_webdb": {"hosts": {"webdb": webdb}}}}},
                }
            }
        )
    )
    extra = {
        "sandbox_name": f"sbwv{uuid.uuid4().hex[:6]}",
        "sandbox_state_dir": str(state / "state"),
        "sandbox_run_dir": str(state / "run"),
        # PostgreSQL and the host only: no AWS API is called.
        "sandbox_moto_enabled": False,
        "sandbox_ec2_register": False,
    }
    one = OneHost(state, inventory, extra, host)
    up = one.playbook(REPO / "playbooks" / "sandbox.yml")
    try:
        assert up.returncode == 0, up.stdout[-4000:]
        yield one
    finally:
        down = one.playbook(REPO / "playbooks" / "sandbox.yml", sandbox_state="absent")
        assert down.returncode == 0, down.stdout[-4000:]
        # The sandbox's teardown takes the volumes with it.
        assert not (state / "state" / "volumes").exists()


def _plays(one: OneHost) -> dict[str, Path]:
    role = _write(
        one.state / "postgresql.yml",
        [{"name": "PostgreSQL", "hosts": "role_webdb", "gather_facts": True, "roles": ["postgresql"]}],
    )

    def sandbox_task(tasks_from: str, **more: Any) -> list[dict[str, Any]]:
        task = {"ansible.builtin.include_role": {"name": "sandbox", "tasks_from": tasks_from}, "vars": more}
        return [{"name": tasks_from, "hosts": "localhost", "gather_facts": False, "tasks": [task]}]

    destroy = _write(one.state / "destroy.yml", sandbox_task("host_absent", sandbox_host=one.host))
    purge = _write(
        one.state / "purge.yml",
        sandbox_task("host_absent", sandbox_host=one.host, sandbox_volumes_purge=True),
    )
    return {"role": role, "destroy": destroy, "purge": purge}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneHost]:
    with _sandbox(tmp_path_factory.mktemp("datavolume"), HOST) as one:
        yield one


@pytest.fixture(scope="module")
def plays(host: OneHost) -> dict[str, Path]:
    return _plays(host)


def test_a_rerun_and_a_replaced_host_keep_the_data(host: OneHost, plays: dict[str, Path]) -> None:
    first = host.playbook(plays["role"])
    assert first.returncode == 0, first.stdout[-5000:]
    # The cluster lives on the volume (outside the host's root), not in the root.
    assert (host.volume / "15" / "main" / "PG_VERSION").read_text().strip() == "15"
    assert not (host.root / "var" / "lib" / "postgresql" / "15").exists()
    # Its configuration too (/etc/postgresql links there): what lets a new root adopt the cluster.
    assert (host.volume / "etc" / "15" / "main" / "postgresql.conf").is_file()
    assert (host.root / "etc" / "postgresql").is_symlink()
    host.sql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('written before the replacement')")
    cluster = host.sql("SELECT system_identifier FROM pg_control_system()")

    again = host.playbook(plays["role"])
    assert again.returncode == 0, again.stdout[-5000:]
    assert play_recap(again.stdout)["webdb"]["changed"] == 0, again.stdout[-5000:]
    assert host.sql("SELECT note FROM kept") == "written before the replacement"

    # Replace the host: its root, network and processes go; the volume stays.
    (host.root / "etc" / "sbw-old-root").write_text("the replaced root\n")
    destroyed = host.playbook(plays["destroy"])
    assert destroyed.returncode == 0, destroyed.stdout[-4000:]
    assert not host.root.exists()
    assert (host.volume / "15" / "main" / "PG_VERSION").exists()
    recreated = host.playbook(REPO / "playbooks" / "sandbox.yml")
    assert recreated.returncode == 0, recreated.stdout[-4000:]
    # A fresh root: nothing of the old host, no PostgreSQL installed.
    assert not (host.root / "etc" / "sbw-old-root").exists()
    assert host.in_host("test", "-e", "/etc/postgresql").returncode != 0
    # And one that numbers its users differently (a newer AMI can): another system user holds the files' uid.
    owner = (host.volume / "15" / "main").stat().st_uid
    squat = host.in_host("useradd", "--system", "--no-create-home", "--uid", str(owner), "sbwsquatter")
    assert squat.returncode == 0, squat.stderr

    replaced = host.playbook(plays["role"])
    assert replaced.returncode == 0, replaced.stdout[-5000:]
    assert play_recap(replaced.stdout)["webdb"]["changed"] >= 1
    assert host.sql("SELECT note FROM kept") == "written before the replacement"
    # initdb would have drawn a new system identifier: the package adopted the cluster it found.
    assert host.sql("SELECT system_identifier FROM pg_control_system()") == cluster
    # The files were given to this root's postgres (the server could not read its files otherwise).
    assert host.in_host("stat", "-c", "%U:%G", "/var/lib/postgresql/15/main/PG_VERSION").stdout.strip() == (
        "postgres:postgres"
    )
    settled = host.playbook(plays["role"])
    assert play_recap(settled.stdout)["webdb"]["changed"] == 0, settled.stdout[-5000:]


def test_purging_a_host_deletes_its_volume(host: OneHost, plays: dict[str, Path]) -> None:
    purged = host.playbook(plays["purge"])
    assert purged.returncode == 0, purged.stdout[-4000:]
    assert not host.root.exists() and not host.volume.exists()
    # Booted again, the host gets an empty volume (created by the task that binds it).
    back = host.playbook(REPO / "playbooks" / "sandbox.yml")
    assert back.returncode == 0, back.stdout[-4000:]
    assert host.volume.is_dir() and not any(host.volume.iterdir())
    assert host.in_host("findmnt", "-n", "-o", "TARGET", "/var/lib/postgresql").stdout.strip() == (
        "/var/lib/postgresql"
    )


@pytest.fixture(scope="module")
def loop_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 256 MiB image on a loop device of the controller: the EBS volume's stand-in (never mounted here)."""
    image = tmp_path_factory.mktemp("ebs") / "volume.img"
    with image.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
    attach = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
    assert attach.returncode == 0, attach.stderr
    device = attach.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def _attach(one: OneHost, device: str) -> None:
    """What EC2 and udev do on a Nitro instance: the device, and its link named by the volume id's serial."""
    rdev = os.stat(device).st_rdev
    link = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}"
    script = (
        f"mknod -m 0660 {device} b {os.major(rdev)} {os.minor(rdev)} && mkdir -p /dev/disk/by-id"
        f" && ln -sfn {device} {link}"
    )
    run = one.in_host("sh", "-c", script)
    assert run.returncode == 0, run.stderr


def _uuid(one: OneHost, device: str) -> str:
    return one.in_host("blkid", "-s", "UUID", "-o", "value", device).stdout.strip()


def test_the_ebs_path_formats_once_mounts_by_uuid_and_a_replaced_host_adopts(
    tmp_path_factory: pytest.TempPathFactory, loop_device: str
) -> None:
    with _sandbox(tmp_path_factory.mktemp("ebsvolume"), EBS_HOST) as one:
        plays = _plays(one)
        _attach(one, loop_device)
        first = one.playbook(plays["role"], postgresql_data_volume_id=VOLUME_ID)
        assert first.returncode == 0, first.stdout[-5000:]
        fs = _uuid(one, loop_device)
        assert fs, "no filesystem on the volume"
        mount = one.in_host("findmnt", "-n", "-o", "SOURCE,FSTYPE", "/var/lib/postgresql").stdout.split()
        assert mount == [loop_device, "ext4"]
        fstab = one.in_host("cat", "/etc/fstab").stdout
        assert f"UUID={fs} /var/lib/postgresql ext4 defaults,nofail" in fstab
        one.sql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('on the volume')")
        cluster = one.sql("SELECT system_identifier FROM pg_control_system()")
        again = one.playbook(plays["role"], postgresql_data_volume_id=VOLUME_ID)
        assert play_recap(again.stdout)["webdb"]["changed"] == 0, again.stdout[-5000:]

        # A replaced instance: fresh root, the same volume attached again.
        destroyed = one.playbook(plays["destroy"])
        assert destroyed.returncode == 0, destroyed.stdout[-4000:]
        recreated = one.playbook(REPO / "playbooks" / "sandbox.yml")
        assert recreated.returncode == 0, recreated.stdout[-4000:]
        assert one.in_host("test", "-e", "/etc/postgresql").returncode != 0
        _attach(one, loop_device)
        replaced = one.playbook(plays["role"], postgresql_data_volume_id=VOLUME_ID)
        assert replaced.returncode == 0, replaced.stdout[-5000:]
        # Not reformatted (same filesystem), the same cluster (no initdb), the row there.
        assert _uuid(one, loop_device) == fs
        assert one.sql("SELECT system_identifier FROM pg_control_system()") == cluster
        assert one.sql("SELECT note FROM kept") == "on the volume"
