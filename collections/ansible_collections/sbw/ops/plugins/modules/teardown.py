#!/usr/bin/python
"""Ansible module sbw.ops.teardown: the stacks deleted in reverse order, data kept unless purged.

A thin wrapper: the work is in controller/sbw_ops/teardown.py (importable from the controller's venv,
which is the interpreter of localhost in every inventory). Supports check mode; `changed` is whether
anything was (or would be) deleted, terminated or snapshotted; a failed step fails the task with its
resource named.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: teardown
short_description: Delete the SBW stacks, keeping or purging the data
description:
  - Deletes the stacks <prefix>-lake ... <prefix>-alerts in reverse deploy order, lifting termination
    protection only on the stacks it deletes.
  - Without purge, retained resources stay (reported with their monthly cost) and each retained instance
    leaves a final snapshot of its volumes before it is terminated.
  - With purge, retained buckets (every version), final snapshots, the parameters under parameter_path,
    their KMS key (scheduled, 7 days) and the user pool are deleted too.
options:
  account:
    description: The account id the operator confirmed; must be the caller's.
    type: str
    required: true
  region: {description: AWS region., type: str, required: true}
  endpoint_url: {description: The sandbox's moto server; unset on AWS., type: str}
  prefix: {description: Stack name prefix (sbw_stacks_name_prefix)., type: str, required: true}
  buckets: {description: The deployment's bucket names., type: list, elements: str, required: true}
  user_pool_name: {description: The auth stack's user pool name., type: str, required: true}
  parameter_path: {description: Parameter Store path of the platform's secrets., type: str, default: /sbw/}
  purge: {description: Delete the data too., type: bool, default: false}
version_added: 1.0.0
author: SBW operations
"""

EXAMPLES = r"""
- name: Delete the stacks, keep the data (final snapshots, retained buckets, /sbw/*)
  sbw.ops.teardown:
    account: "{{ sbw_confirm_teardown }}"
    region: ap-southeast-1
    prefix: sbw
    buckets: [clickstream-s3-ingest-123456789012, clickstream-s3-artifacts-123456789012]
    user_pool_name: sbw-shop-users
"""

RETURN = r"""
actions: {description: What was (check mode - would be) done, in order., type: list, returned: always}
kept: {description: "Kept items: kind, name, quantity, monthly_usd.", type: list, returned: always}
kept_monthly_usd: {description: Sum of the kept items' monthly cost., type: float, returned: always}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "account": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "prefix": {"type": "str", "required": True},
            "buckets": {"type": "list", "elements": "str", "required": True},
            "user_pool_name": {"type": "str", "required": True},
            "parameter_path": {"type": "str", "default": "/sbw/"},
            "purge": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        import boto3
        from sbw_ops.teardown import Teardown, TeardownError
    except ImportError as error:
        module.fail_json(msg=f"sbw.ops.teardown needs the controller's venv (make deps): {error}")
    params = module.params
    session = boto3.session.Session(region_name=params["region"])

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=params["endpoint_url"])

    # The same check as the playbook's, here too: the module never acts on an account nobody named.
    caller = client("sts").get_caller_identity()["Account"]
    if caller != params["account"]:
        module.fail_json(
            msg=f"account={params['account']} is not the caller's account ({caller}); nothing done"
        )
    teardown = Teardown(
        client=client,
        prefix=params["prefix"],
        buckets=params["buckets"],
        user_pool_name=params["user_pool_name"],
        parameter_path=params["parameter_path"],
        purge=params["purge"],
        check_mode=module.check_mode,
        sandbox=params["endpoint_url"] is not None,
        wait_delay=1 if params["endpoint_url"] else 15,
    )
    try:
        result = teardown.run()
    except (TeardownError, Exception) as error:  # any AWS error: say what was done before it
        module.fail_json(msg=f"teardown stopped: {error}", actions=teardown.result.actions)
    module.exit_json(**result.as_dict())


if __name__ == "__main__":
    main()
