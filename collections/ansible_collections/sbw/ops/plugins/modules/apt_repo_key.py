#!/usr/bin/python
"""Ansible module sbw.ops.apt_repo_key: the private apt repository's ed25519 signing key, made once on
the controller (sbw_ops.apt_repo.ensure_signing_key); only its public half ever leaves the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_repo_key
short_description: Ensure the private apt repository's signing key exists
description:
  - Creates an ed25519 OpenPGP key once under O(key_dir) (C(signing-key.asc) private, mode 0600;
    C(signing-key.gpg) public), the key the repository's C(InRelease) and C(Release.gpg) are signed with.
  - An existing key is never replaced; its private half is kept readable by its owner only.
version_added: 1.0.0
author: SBW ops
options:
  key_dir:
    description: Directory of the key, outside git (created 0700).
    type: path
    required: true
extends_documentation_fragment:
  - sbw.ops.controller
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Ensure the repository signing key
  sbw.ops.apt_repo_key:
    key_dir: "{{ apt_repo_publish_key_dir }}"
"""

RETURN = r"""
fingerprint:
  description: Primary key fingerprint (empty in check mode when the key would be created).
  returned: always
  type: str
public_key:
  description: Path of the public key file.
  returned: always
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import import_controller


def main() -> None:
    module = AnsibleModule(
        argument_spec={"key_dir": {"type": "path", "required": True}}, supports_check_mode=True
    )
    apt_repo = import_controller(module, "sbw_ops.apt_repo")
    key_dir = Path(module.params["key_dir"])
    private, public = key_dir / apt_repo.PRIVATE_KEY_NAME, key_dir / apt_repo.PUBLIC_KEY_NAME
    if private.exists() != public.exists():
        module.fail_json(
            msg=f"{key_dir} holds only half of the signing key ({private.name} and {public.name} belong "
            "together): restore the missing file from a backup, or move the directory away to make a new key "
            "(the hosts must then be given the new public key)"
        )
    exists = private.exists()
    changed = not exists or private.stat().st_mode & 0o777 != 0o600
    diff = {
        "before": f"key {'present' if exists else 'absent'}\n",
        "after": "key present, private half 0600\n",
        "before_header": str(key_dir),
        "after_header": str(key_dir),
    }
    if module.check_mode:
        fingerprint = apt_repo.key_fingerprint(public) if exists else ""
        module.exit_json(changed=changed, fingerprint=fingerprint, public_key=str(public), diff=diff)
    try:
        apt_repo.ensure_signing_key(key_dir)
        private.chmod(0o600)
        fingerprint = apt_repo.key_fingerprint(public)
    except (apt_repo.AptRepoError, OSError) as error:
        module.fail_json(msg=f"signing key in {key_dir}: {error}")
    module.exit_json(changed=changed, fingerprint=fingerprint, public_key=str(public), diff=diff)


if __name__ == "__main__":
    main()
