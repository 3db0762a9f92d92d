"""roles/postgresql without a host: memory sizing from facts and the scram-only pg_hba rule.

Runs the role's own variable checks (tasks_from: variables, vars/main.yml) on localhost, so a wrong
formula or a relaxed assert fails here in seconds; the server itself is exercised by
`molecule test -s postgresql` (real PostgreSQL 15 on an nspawn host).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run_role_checks(tmp_path: Path, role_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    play = [
        {
            "name": "postgresql role checks",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Run the role's variable checks",
                    "ansible.builtin.include_role": {
                        "name": "postgresql",
                        "tasks_from": "variables",
                        "public": True,
                    },
                    "vars": role_vars,
                },
                {
                    "name": "Show the sizing",
                    "ansible.builtin.debug": {"var": "__postgresql_memory"},
                    "vars": role_vars,
                },
            ],
        }
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(REPO_ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _sizing(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tasks = json.loads(result.stdout)["plays"][0]["tasks"]
    return tasks[-1]["hosts"]["localhost"]["__postgresql_memory"]


@pytest.mark.parametrize(
    ("memory_mb", "expected"),
    [
        # A t3.small: 25 % / 75 % / 5 % / (RAM - shared_buffers) / (3 x 100 connections).
        (
            2048,
            {"shared_buffers": "512MB", "effective_cache_size": "1536MB", "maintenance_work_mem": "102MB"},
        ),
        # A large host: maintenance_work_mem is capped at 2 GB.
        (
            65536,
            {
                "shared_buffers": "16384MB",
                "effective_cache_size": "49152MB",
                "maintenance_work_mem": "2048MB",
            },
        ),
    ],
)
def test_memory_settings_follow_the_ram(tmp_path: Path, memory_mb: int, expected: dict[str, str]) -> None:
    sizing = _sizing(_run_role_checks(tmp_path, {"postgresql_memory_mb": memory_mb}))
    assert {k: sizing[k] for k in expected} == expected
    work_mem_kb = int(sizing["work_mem"].removesuffix("kB"))
    assert work_mem_kb == max((memory_mb - memory_mb // 4) * 1024 // 300, 4096)


def test_explicit_memory_settings_win(tmp_path: Path) -> None:
    sizing = _sizing(
        _run_role_checks(tmp_path, {"postgresql_memory_mb": 2048, "postgresql_shared_buffers": "128MB"})
    )
    assert sizing["shared_buffers"] == "128MB"
    assert sizing["effective_cache_size"] == "1536MB"


@pytest.mark.parametrize("method", ["md5", "trust", "password"])
def test_network_entries_other_than_scram_are_refused(tmp_path: Path, method: str) -> None:
    entry = {"type": "host", "database": "all", "user": "all", "address": "198.18.0.0/28", "method": method}
    result = _run_role_checks(
        tmp_path, {"postgresql_memory_mb": 2048, "postgresql_hba_extra_entries": [entry]}
    )
    assert result.returncode != 0
    assert "postgresql_hba_extra_entries" in result.stdout


def test_peer_is_allowed_only_locally(tmp_path: Path) -> None:
    local = {"type": "local", "database": "all", "user": "postgres", "method": "peer"}
    assert (
        _run_role_checks(
            tmp_path, {"postgresql_memory_mb": 2048, "postgresql_hba_extra_entries": [local]}
        ).returncode
        == 0
    )
    remote = {**local, "type": "host", "address": "198.18.0.0/28"}
    result = _run_role_checks(
        tmp_path, {"postgresql_memory_mb": 2048, "postgresql_hba_extra_entries": [remote]}
    )
    assert result.returncode != 0
    assert "scram-sha-256" in result.stdout


@pytest.mark.parametrize("volume_id", ["/dev/xvdf", "vol-XYZ", "vol-0123", "0123456789abcdef0"])
def test_a_data_volume_id_that_is_not_an_ebs_id_is_refused(tmp_path: Path, volume_id: str) -> None:
    result = _run_role_checks(
        tmp_path, {"postgresql_memory_mb": 2048, "postgresql_data_volume_id": volume_id}
    )
    assert result.returncode != 0
    assert "postgresql_data_volume_id must be an EBS volume id" in result.stdout


@pytest.mark.parametrize("volume_id", ["", "vol-0123abcd", "vol-0123456789abcdef0"])
def test_an_ebs_volume_id_or_none_is_accepted(tmp_path: Path, volume_id: str) -> None:
    result = _run_role_checks(
        tmp_path, {"postgresql_memory_mb": 2048, "postgresql_data_volume_id": volume_id}
    )
    assert result.returncode == 0, result.stdout[-3000:]
