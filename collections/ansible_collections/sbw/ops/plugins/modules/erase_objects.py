#!/usr/bin/python
"""Ansible module sbw.ops.erase_objects: the S3 half of a right-to-erasure request (sbw_ops.erase.erase):
the raw objects that held the subject's events rewritten without them, their old versions removed, and
the failed/ records that mention the subject deleted."""

from __future__ import annotations

DOCUMENTATION = r"""
module: erase_objects
short_description: Erase one person's events from the raw bucket
description:
  - For each of O(keys) (the raw objects C(dw_erase_subject) returned), rewrites the object without the
    events whose O(kind) equals O(value), or deletes it when nothing else is left, and deletes every other
    version of it; then deletes every C(failed/) record that mentions O(value).
  - Events that stay keep the ids they were loaded with.
  - Check mode counts what would be rewritten and deleted and changes nothing.
  - O(value) is personal data and never logged.
version_added: 1.0.0
author: SBW ops
options:
  bucket:
    description: The raw bucket.
    type: str
    required: true
  kind:
    description: Which identifier O(value) is.
    type: str
    required: true
    choices: [user_id, client_id]
  value:
    description: The identifier of the person.
    type: str
    required: true
  keys:
    description: Raw object keys to rewrite.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - sbw.ops.controller
  - sbw.ops.controller.s3
attributes:
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Rewrite the objects and delete the failed/ records that mention the subject
  sbw.ops.erase_objects:
    bucket: "{{ sbw_raw_bucket }}"
    kind: user_id
    value: "{{ user_id }}"
    keys: "{{ erase_keys }}"
"""

RETURN = r"""
rewritten:
  description: Objects rewritten without the subject's events.
  returned: success
  type: int
deleted:
  description: Objects deleted (they held nothing else).
  returned: success
  type: int
unchanged:
  description: Objects without the subject's events (or already gone).
  returned: success
  type: int
failed_deleted:
  description: failed/ records deleted.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import (
    S3_OPTIONS,
    aws_errors,
    import_controller,
    s3_client,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bucket": {"type": "str", "required": True},
            "kind": {"type": "str", "required": True, "choices": ["user_id", "client_id"]},
            "value": {"type": "str", "required": True, "no_log": True},
            "keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
            **S3_OPTIONS,
        },
        supports_check_mode=True,
    )
    params = module.params
    if not params["value"]:
        module.fail_json(msg=f"value is empty: give the {params['kind']} to erase")
    erase = import_controller(module, "sbw_ops.erase")
    keys = [key.strip() for key in params["keys"] if key.strip()]
    try:
        counts = erase.erase(
            s3_client(params["endpoint_url"], params["region"]),
            params["bucket"],
            params["kind"],
            params["value"],
            keys,
            dry_run=module.check_mode,
        )
    except (ValueError, erase.ObjectError, *aws_errors()) as error:
        module.fail_json(msg=f"erasing from s3://{params['bucket']}: {type(error).__name__}: {error}")
    changed = counts["rewritten"] + counts["deleted"] + counts["failed_deleted"] > 0
    module.exit_json(changed=changed, **counts)


if __name__ == "__main__":
    main()
