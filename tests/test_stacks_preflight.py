"""The preflight play of playbooks/stacks.yml fails early, saying what is missing and how to fix it.

No AWS is reached: the region check needs nothing, the plugin check runs before any AWS call, and the
credentials check points at a closed local port with no credentials anywhere (botocore fails before
sending anything; the instance metadata lookup is disabled).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(
    tmp_path: Path, *extra: str, env_update: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "localhost.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") or k in {"AWS_DEFAULT_REGION"}  # no credentials of any kind
    }
    env.update(
        {
            # Only the venv and the system: the plugin's package installs to /usr/local/bin, not here.
            "PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            **(env_update or {}),
        }
    )
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "stacks.yml"), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=300,
    )


def test_invalid_region_is_named(tmp_path: Path) -> None:
    result = run(tmp_path, "-e", "sbw_aws_region=mars-north")
    assert result.returncode != 0
    assert "sbw_aws_region must name an AWS region" in result.stdout
    assert "mars-north" in result.stdout


def test_missing_session_manager_plugin_says_how_to_install_it(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.returncode != 0
    assert "session-manager-plugin was not found" in result.stdout
    assert "session-manager-plugin.deb" in result.stdout
    # It stopped before any AWS call.
    assert "Ask AWS who we are" not in result.stdout


def test_missing_credentials_are_explained(tmp_path: Path) -> None:
    result = run(tmp_path, "-e", "sbw_aws_endpoint_url=http://127.0.0.1:9")
    assert result.returncode != 0
    assert "No usable AWS credentials" in result.stdout
    assert "aws configure" in result.stdout
    assert "Deploy the network stack" not in result.stdout


def test_bad_endpoint_override_is_named(tmp_path: Path) -> None:
    result = run(tmp_path, "-e", "sbw_aws_endpoint_url=localhost:4566")
    assert result.returncode != 0
    assert "sbw_aws_endpoint_url='localhost:4566' is not a URL" in result.stdout
