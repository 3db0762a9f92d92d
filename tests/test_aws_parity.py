"""AWS parity of the host plays, without booting a host (issue 12).

- Every variable the host plays use that an environment defines (the sandbox inventory, a molecule
  scenario) is defined for AWS too: in playbooks/group_vars/all, in the stacks' facts that
  playbooks/stacks.yml writes, or by inventory/aws_ec2.yml's compose. Only the endpoint variables
  differ (they are unset on AWS).
- A playbook run without the stacks' facts fails before any change, naming the variable and how to
  get it; it never falls back to the seed's unsuffixed bucket name (a global name nobody here owns).
- With the facts file (build/aws/stacks-facts.yml or sbw_stacks_facts_file) the same playbook finds
  them on its own, outside site.yml.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"

# The host plays and the roles they run (site.yml's order).
HOST_PLAYBOOKS = ("private_repo", "stacks_facts", "webdb", "dwh")
HOST_ROLES = ("apt_repo_publish", "apt_private_source", "postgresql", "oltp_schema", "dw_schema")
HOST_ROLES += ("shiny_server", "sbw_dashboard", "host_metrics", "patching")
# The one documented difference between the sandbox and AWS: where the AWS APIs are.
ENDPOINT_VARIABLES = {"sbw_aws_endpoint_url", "sbw_aws_guest_endpoint_url"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _names_used_by_host_plays() -> set[str]:
    files = [REPO / "playbooks" / f"{name}.yml" for name in HOST_PLAYBOOKS]
    files += sorted((REPO / "playbooks" / "tasks").glob("*.yml"))
    for role in HOST_ROLES:
        for sub in ("defaults", "vars", "tasks", "templates", "handlers"):
            files += [p for p in (REPO / "roles" / role / sub).rglob("*") if p.is_file()]
    used: set[str] = set()
    for path in files:
        used |= set(re.findall(r"\bsbw_[a-z0-9_]+", path.read_text()))
    return used


def _stacks_fact_names() -> set[str]:
    """Keys of the facts playbooks/stacks.yml keeps and writes to its facts file."""
    plays = yaml.safe_load((REPO / "playbooks" / "stacks.yml").read_text())
    for play in plays:
        for task in play.get("tasks", []):
            facts = (task.get("ansible.builtin.set_fact") or {}).get("sbw_stacks_facts")
            if facts:
                return set(facts)
    raise AssertionError("playbooks/stacks.yml keeps no sbw_stacks_facts")


def _defined_for_aws() -> set[str]:
    shared = set(_yaml(REPO / "playbooks" / "group_vars" / "all" / "main.yml"))
    composed = set(_yaml(REPO / "inventory" / "aws_ec2.yml")["compose"])
    return shared | _stacks_fact_names() | composed


def _defined_elsewhere() -> dict[str, set[str]]:
    """Variables the sandbox inventory and the molecule scenarios define, by where."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "inventory" / "sandbox" / "group_vars").glob("*.yml")):
        found[str(path.relative_to(REPO))] = set(_yaml(path))
    hosts = _yaml(REPO / "inventory" / "sandbox" / "hosts.yml")

    def walk(group: dict) -> set[str]:
        names = {k for host in (group.get("hosts") or {}).values() for k in (host or {})}
        names |= set(group.get("vars") or {})
        for child in (group.get("children") or {}).values():
            names |= walk(child or {})
        return names

    found["inventory/sandbox/hosts.yml"] = walk(hosts["all"])
    for path in sorted((REPO / "molecule").glob("*/molecule.yml")):
        group_vars = ((_yaml(path).get("provisioner") or {}).get("inventory") or {}).get("group_vars") or {}
        found[str(path.relative_to(REPO))] = {k for v in group_vars.values() for k in (v or {})}
    return found


def test_every_variable_the_host_plays_use_is_defined_for_aws_too() -> None:
    used = _names_used_by_host_plays()
    aws = _defined_for_aws()
    missing = {
        where: sorted(names & used - aws - ENDPOINT_VARIABLES)
        for where, names in _defined_elsewhere().items()
        if names & used - aws - ENDPOINT_VARIABLES
    }
    where = "group_vars/all, the stacks' facts, aws_ec2.yml"
    assert not missing, f"defined only outside the AWS path ({where}): {missing}"
    # The network facts pg_hba is built from are the stacks' outputs, not an inventory's guess.
    assert {"sbw_webdb_client_cidrs", "sbw_dwh_etl_cidrs", "sbw_artifacts_bucket"} <= _stacks_fact_names()
    assert {"sbw_webdb_client_cidrs", "sbw_dwh_etl_cidrs"} <= used


def test_no_role_or_playbook_falls_back_to_a_seed_bucket_name() -> None:
    pattern = re.compile(r"default\(\s*['\"]clickstream-s3-")
    offenders = [
        str(p.relative_to(REPO))
        for top in ("roles", "playbooks", "inventory")
        for p in (REPO / top).rglob("*.yml")
        if pattern.search(p.read_text())
    ]
    assert not offenders


def _run(tmp_path: Path, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # A host that cannot be reached: anything that contacts it shows as UNREACHABLE.
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"localhost": {"ansible_connection": "local"}},
                    "children": {
                        "role_webdb": {"hosts": {"webdb": {"ansible_host": "127.0.0.1", "ansible_port": 9}}},
                        "role_dwh": {"hosts": {"dwh": {"ansible_host": "127.0.0.1", "ansible_port": 9}}},
                    },
                }
            }
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_TIMEOUT": "3",
        "SBW_STATE_ROOT": str(tmp_path / "state"),
    }
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), f"playbooks/{playbook}.yml", *extra]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)


@pytest.mark.parametrize(
    ("playbook", "variable"),
    [
        ("private_repo", "sbw_artifacts_bucket"),
        ("webdb", "sbw_webdb_client_cidrs"),
        ("dwh", "sbw_artifacts_bucket"),
        ("dwh", "sbw_dwh_etl_cidrs"),
        ("webdb", "sbw_backup_bucket"),
        ("dwh", "sbw_backup_bucket"),
    ],
)
def test_without_the_stacks_facts_a_playbook_fails_first_naming_the_variable(
    tmp_path: Path, playbook: str, variable: str
) -> None:
    result = _run(tmp_path, playbook, "-e", f"sbw_stacks_facts_file={tmp_path / 'none.yml'}")
    out = result.stdout
    assert result.returncode == 2, out
    assert f"{variable} is not set. It is an output of the stacks: run playbooks/stacks.yml" in out, out
    assert "UNREACHABLE" not in out and "changed=1" not in out  # before any contact, no change
    assert "clickstream-s3-artifacts" not in out
    assert not (tmp_path / "state").exists()  # nothing written either


def test_the_facts_file_is_found_outside_site_yml(tmp_path: Path) -> None:
    facts = tmp_path / "stacks-facts.yml"
    facts.write_text(
        yaml.safe_dump(
            {
                "sbw_webdb_client_cidrs": ["203.0.113.7/32"],
                "sbw_artifacts_bucket": "owned-bucket",
                "sbw_backup_bucket": "owned-backups",
            }
        )
    )
    result = _run(tmp_path, "webdb", "-e", f"sbw_stacks_facts_file={facts}")
    # Past the check: the next task contacts the host, which is not there.
    assert "is not set" not in result.stdout, result.stdout
    assert "UNREACHABLE" in result.stdout and "Gather the host's facts" in result.stdout, result.stdout
