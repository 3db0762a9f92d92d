"""The dw_schema role's migration protocol against a real PostgreSQL 15 on the controller, in seconds.

The role runs through ansible-playbook exactly as on a host (become postgres, unix socket), on a
private cluster of this module (roles are cluster-wide: the role creates sbw_etl / sbw_dashboard) and
its own moto server for the SSM passwords. Checks that the role and `sbw_ops.migrate` are one
protocol: the same schema_migrations rows (versions, names, sha256 checksums), no migration applied
twice whichever ran first, a second role run changes nothing, and a tampered checksum stops the run
naming the migration. Behaviour on real hosts: molecule/dw_schema and tests/test_site_sandbox.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sbw_ops.migrate import apply_migrations, load_migrations
from sbw_ops.moto_server import MotoServer, start_moto_server

from tests.fixtures.postgres import PgServer, start_pg_server

REPO = Path(__file__).resolve().parents[1]
_RECAP = re.compile(r"^devhost\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)


@dataclass(frozen=True)
class RoleRunner:
    """Runs roles/dw_schema against one database of the module's cluster."""

    server: PgServer
    moto: MotoServer
    workdir: Path

    def run(self, database: str) -> subprocess.CompletedProcess[str]:
        playbook = self.workdir / "play.yml"
        playbook.write_text(
            "- name: dw_schema on the controller's cluster\n"
            "  hosts: devhost\n"
            "  gather_facts: false\n"
            "  roles:\n"
            "    - role: dw_schema\n"
        )
        extra = {
            "dw_schema_database": database,
            "dw_schema_port": self.server.port,
            "dw_schema_unix_socket": str(self.server.base / "sock"),
            "dw_schema_etl_cidrs": ["198.18.0.16/28"],
            "sbw_aws_endpoint_url": self.moto.endpoint_url,
            "sbw_aws_region": "ap-southeast-1",
        }
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            # become postgres on the controller: su (no sudo here), pipelining (no world-readable tmp files)
            "ANSIBLE_BECOME_METHOD": "su",
            "ANSIBLE_PIPELINING": "1",
        }
        return subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                str(self.workdir / "inventory.yml"),
                str(playbook),
                "-e",
                json.dumps(extra),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


def _counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = _RECAP.search(result.stdout.rsplit("PLAY RECAP", 1)[-1])
    assert match, result.stdout[-3000:]
    return {k: int(v) for k, v in (pair.split("=") for pair in match["counts"].split())}


def _applied_by_role(result: subprocess.CompletedProcess[str]) -> list[str]:
    return re.findall(r"^changed: \[devhost\] => \(item=(V\d+__\w+\.sql)\)", result.stdout, re.MULTILINE)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleRunner]:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import psycopg2"], capture_output=True, check=False)
    assert probe.returncode == 0, (
        "needs /usr/bin/python3 with psycopg2 (apt python3-psycopg2, .ci/apt-packages.txt)"
    )
    workdir = tmp_path_factory.mktemp("dw-schema-role")
    # the module runs as the postgres OS user: the system Python (with python3-psycopg2), not the venv
    (workdir / "inventory.yml").write_text(
        "all:\n  hosts:\n"
        "    devhost: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}\n"
        f"    localhost: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}\n"
    )
    server = start_pg_server()
    moto = start_moto_server(workdir / "moto.log")
    try:
        yield RoleRunner(server, moto, workdir)
    finally:
        moto.stop()
        server.stop()


def _create_database(server: PgServer, name: str) -> None:
    """A database as the role creates it (UTF-8, C.UTF-8), so the role finds nothing to change."""
    server.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
    )


def _rows(server: PgServer, database: str) -> list[tuple[int, str, str]]:
    return [
        (version, name, checksum.strip())
        for version, name, checksum in server.execute(
            "SELECT version, name, checksum FROM public.schema_migrations ORDER BY version", dbname=database
        )
    ]


def test_role_records_what_migrate_records_and_reruns_change_nothing(runner: RoleRunner) -> None:
    first = runner.run("dw_role_first")
    assert first.returncode == 0, first.stdout[-4000:]
    expected = [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert _rows(runner.server, "dw_role_first") == expected
    assert _applied_by_role(first) == [m.path.name for m in load_migrations()]

    second = runner.run("dw_role_first")
    assert second.returncode == 0, second.stdout[-4000:]
    assert _counts(second)["changed"] == 0, second.stdout[-4000:]
    # and the Python applier agrees there is nothing left to do
    assert apply_migrations(runner.server.dsn("dw_role_first")) == []


def test_role_applies_nothing_that_migrate_already_applied(runner: RoleRunner) -> None:
    _create_database(runner.server, "dw_migrate_first")
    assert apply_migrations(runner.server.dsn("dw_migrate_first")) == [m.version for m in load_migrations()]
    result = runner.run("dw_migrate_first")
    assert result.returncode == 0, result.stdout[-4000:]
    assert _applied_by_role(result) == []
    assert _rows(runner.server, "dw_migrate_first") == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]


def test_role_stops_on_an_edited_applied_migration(runner: RoleRunner) -> None:
    _create_database(runner.server, "dw_tampered")
    apply_migrations(runner.server.dsn("dw_tampered"))
    first = load_migrations()[0]
    runner.server.execute(
        "UPDATE public.schema_migrations SET checksum = %s WHERE version = %s",
        ("0" * 64, first.version),
        dbname="dw_tampered",
    )
    result = runner.run("dw_tampered")
    assert result.returncode != 0
    assert "never edit an applied migration" in result.stdout
    assert f"{first.version}:{'0' * 64}" in result.stdout
    assert _applied_by_role(result) == []
