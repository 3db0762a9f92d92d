"""What the sbw.ops modules share: importing the controller package `sbw_ops` (installed in the project's
venv) with a failure that says which Python ran the module, the S3 client, and compact diffs of deb822
package lists."""

from __future__ import annotations

import importlib
import sys
import traceback
from types import ModuleType
from typing import Any

# The argument spec of doc fragment sbw.ops.controller.s3.
S3_OPTIONS: dict[str, dict[str, Any]] = {
    "endpoint_url": {"type": "str", "default": ""},
    "region": {"type": "str", "default": "ap-southeast-1"},
}


def import_controller(module: Any, name: str) -> ModuleType:
    """Import `name` (e.g. sbw_ops.apt_repo) or fail the task naming the interpreter."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        module.fail_json(
            msg=(
                f"{name} cannot be imported by {sys.executable} ({error}). The sbw.ops modules run on the "
                "controller under the project's venv Python: run `make venv` and leave localhost's "
                "ansible_python_interpreter at ansible_playbook_python (the venv's)."
            ),
            exception=traceback.format_exc(),
        )
        raise  # fail_json exits; this keeps type checkers honest


def aws_errors() -> tuple[type[Exception], ...]:
    """The botocore errors a module reports as a failure (imported once import_controller passed)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client with standard retries and path-style addressing (moto and AWS alike)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)


def package_lines(stanzas: bytes | str | None) -> str:
    """`Package Version` per stanza of a dpkg status or Packages file, sorted: a diff a reader can scan."""
    if stanzas is None:
        return ""
    text = stanzas.decode("utf-8", "replace") if isinstance(stanzas, bytes) else stanzas
    lines = []
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[:1] != " ")
        if "Package" in fields:
            lines.append(f"{fields['Package']} {fields.get('Version', '')}".rstrip())
    return "".join(f"{line}\n" for line in sorted(lines))
