#!/usr/bin/python
"""Ansible module sbw.ops.apt_repo_base_status: the host image's dpkg status, copied out of the sandbox's
cached root tarball (sbw_ops.apt_repo.extract_base_status); the repository's closure is computed
against it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_repo_base_status
short_description: Copy the dpkg status of a root tarball to a file
description:
  - Reads C(var/lib/dpkg/status) out of O(tarball) (the sandbox's cached Debian root, the dwh host's
    "AMI") and writes it to O(dest) when it differs.
  - The diff lists the packages (name and version) before and after.
version_added: 1.0.0
author: SBW ops
options:
  tarball:
    description: Root tarball (any compression tar reads).
    type: path
    required: true
  dest:
    description: Where the status is kept (its directory is created).
    type: path
    required: true
extends_documentation_fragment:
  - sbw.ops.controller
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Extract the dpkg status of the cached root
  sbw.ops.apt_repo_base_status:
    tarball: /var/cache/sbw-sandbox/debian-bookworm-0123abcd.tar.zst
    dest: ~/.sbw/apt-repo/base-status-artifacts-repo
"""

RETURN = r"""
packages:
  description: Number of packages in the status.
  returned: success
  type: int
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import import_controller, package_lines


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "tarball": {"type": "path", "required": True},
            "dest": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    apt_repo = import_controller(module, "sbw_ops.apt_repo")
    tarball, dest = Path(module.params["tarball"]), Path(module.params["dest"])
    if not tarball.is_file():
        module.fail_json(
            msg=f"tarball={tarball} does not exist (the sandbox's cached root: run playbooks/sandbox.yml)"
        )
    try:
        status = apt_repo.read_base_status(tarball)
    except apt_repo.AptRepoError as error:
        module.fail_json(msg=f"tarball={tarball}: {error}")
    before = dest.read_text() if dest.is_file() else None
    changed = before != status
    if changed and not module.check_mode:
        apt_repo.extract_base_status(tarball, dest)
    diff = {
        "before": package_lines(before),
        "after": package_lines(status),
        "before_header": str(dest),
        "after_header": str(tarball),
    }
    module.exit_json(changed=changed, packages=package_lines(status).count("\n"), diff=diff)


if __name__ == "__main__":
    main()
