"""Running Ansible from the suites: the environment every ansible-playbook run gets (the venv first on
PATH, the repository's ansible.cfg, no colour, moto's fake credentials) and the `PLAY RECAP` parser
(sbw_ops.platform_base.play_recap, the one the demo uses)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from sbw_ops.platform_base import play_recap

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(BIN / "ansible-playbook")

__all__ = ["ANSIBLE_PLAYBOOK", "LOCAL_CONTROLLER", "ansible_env", "play_recap"]

# localhost in a test inventory: the controller, its modules under the venv's Python (boto3, sbw_ops).
LOCAL_CONTROLLER = {
    "ansible_connection": "local",
    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
}


def ansible_env(**extra: str) -> dict[str, str]:
    """os.environ plus what an ansible-playbook run of the tests needs; `extra` on top."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "ap-southeast-1"),
        **extra,
    }


def unwrap_unsafe(value: Any) -> Any:
    """ansible-inventory --list marks templated values as {"__ansible_unsafe": value}: the values."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap_unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_unsafe(v) for v in value]
    return value
