"""The sandbox hosts look like the Debian 12 AMI (issue 12 point 2), and the roles install what they need.

The image holds no package the official Debian AMI for EC2 lacks (the AMI's lists:
tests/data/debian12_ec2_ami_packages.txt, from debian-cloud-images), so a role that forgets to install
acl or psycopg2 fails in the sandbox as it would on AWS. Every role whose tasks need such a package
installs it first (tasks/prerequisites.yml), and on the private host those packages come only from the
signed repository, so they must be in apt_repo_publish_packages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "roles"
AMI_LIST = REPO / "tests" / "data" / "debian12_ec2_ami_packages.txt"
# Roles applied to the private dwh host (playbooks/dwh.yml), whose packages come from the S3 repository.
DWH_ROLES = (
    "apt_private_source",
    "postgresql",
    "pgbackrest",
    "dw_schema",
    "shiny_server",
    "sbw_dashboard",
    "host_metrics",
)
# What a role's tasks need on the host for a given use, and the Debian package that provides it.
NEEDS = {
    "become_user": "acl",  # Ansible shares the module file with the become user through setfacl
    "community.postgresql.": "python3-psycopg2",
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _ami_packages() -> dict[str, str]:
    """package -> the AMI class that lists it, or '<- listed package' for a recorded dependency."""
    packages = {}
    for line in AMI_LIST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, source = line.split(None, 1)
            packages[name] = source
    return packages


def _role_tasks_text(role: str) -> str:
    return "\n".join(p.read_text() for p in sorted((ROLES / role / "tasks").glob("*.yml")))


def _prerequisites(role: str) -> list[str]:
    path = ROLES / role / "vars" / "main.yml"
    return _yaml(path).get(f"__{role}_prerequisites", []) if path.exists() else []


def test_the_image_holds_nothing_the_debian_ami_lacks() -> None:
    ami = _ami_packages()
    image = _yaml(ROLES / "sandbox" / "defaults" / "main.yml")["sandbox_rootfs_packages"]
    assert [p for p in image if p not in ami] == []
    # Every recorded dependency names a package the AMI lists itself.
    for name, source in ami.items():
        if source.startswith("<-"):
            assert source.split()[1] in ami and not ami[source.split()[1]].startswith("<-"), name
    # What issue 12 found in the old image and the AMI does not have.
    assert {"acl", "gnupg", "python3-psycopg2"}.isdisjoint(image)
    # The SSM file transfer needs curl on the host, and the agent's UserData download too.
    assert "curl" in image and "curl" in ami


ROLES_WITH_TASKS = sorted(
    p.parent.parent.name for p in ROLES.glob("*/tasks/main.yml") if p.parent.parent.name != "sandbox"
)


@pytest.mark.parametrize("role", ROLES_WITH_TASKS)
def test_a_role_installs_what_its_tasks_need_first(role: str) -> None:
    text = _role_tasks_text(role)
    needed = sorted({package for use, package in NEEDS.items() if use in text})
    prerequisites = _prerequisites(role)
    assert [p for p in needed if p not in prerequisites] == [], f"{role}: add them to __{role}_prerequisites"
    if needed:
        main = (ROLES / role / "tasks" / "main.yml").read_text()
        steps = re.findall(r"^\s*ansible\.builtin\.(?:import|include)_tasks: (\S+)", main, re.M)
        steps = [s for s in steps if s not in ("variables.yml", "validate.yml")]  # checks change nothing
        assert steps and steps[0] == "prerequisites.yml", f"{role}: prerequisites.yml must be its first step"


def test_the_private_repository_holds_every_prerequisite_of_the_dwh_roles() -> None:
    published = set(_yaml(ROLES / "apt_repo_publish" / "defaults" / "main.yml")["apt_repo_publish_packages"])
    missing = {role: [p for p in _prerequisites(role) if p not in published] for role in DWH_ROLES}
    assert {role: m for role, m in missing.items() if m} == {}
