#!/usr/bin/python
"""Ansible module sbw.ops.apt_repo_read_policy: for the sandbox's S3 stand-in only, the storage stack's
anonymous-read statement on the repository prefix, merged into the bucket policy
(sbw_ops.apt_repo.plan_read_policy); on AWS the stack owns it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_repo_read_policy
short_description: Merge the repository's anonymous-read statement into a bucket policy (S3 stand-in only)
description:
  - moto's CloudFormation creates no C(AWS::S3::BucketPolicy), and moto refuses anonymous reads without one;
    this puts the storage stack's statement (C(s3:GetObject) on O(prefix), condition C(aws:sourceVpce)) into
    the bucket policy, keeping every other statement.
  - Never used on AWS, where the storage stack owns the policy.
  - The diff is the bucket policy before and after (JSON).
version_added: 1.0.0
author: SBW ops
options:
  bucket:
    description: The artifacts bucket.
    type: str
    required: true
  prefix:
    description: Key prefix of the repository.
    type: str
    default: repo
  vpce:
    description: The gateway endpoint id of the condition (moto ignores it).
    type: str
    default: vpce-00000000000000000
extends_documentation_fragment:
  - sbw.ops.controller
  - sbw.ops.controller.s3
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Let the host read the repository anonymously (S3 stand-in only)
  sbw.ops.apt_repo_read_policy:
    bucket: "{{ sbw_artifacts_bucket }}"
    prefix: repo
    endpoint_url: http://127.0.0.1:4566
"""

RETURN = r"""
policy:
  description: The bucket policy after the change (what it would be, in check mode).
  returned: success
  type: dict
"""

import json

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
            "prefix": {"type": "str", "default": "repo"},
            "vpce": {"type": "str", "default": "vpce-00000000000000000"},
            **S3_OPTIONS,
        },
        supports_check_mode=True,
    )
    params = module.params
    if not params["endpoint_url"]:
        module.fail_json(
            msg="endpoint_url is empty: this module is for the S3 stand-in only "
            "(on AWS the storage stack owns the bucket policy)"
        )
    apt_repo = import_controller(module, "sbw_ops.apt_repo")
    client = s3_client(params["endpoint_url"], params["region"])
    try:
        before, after = apt_repo.plan_read_policy(client, params["bucket"], params["prefix"], params["vpce"])
        changed = before != after
        if changed and not module.check_mode:
            client.put_bucket_policy(Bucket=params["bucket"], Policy=json.dumps(after))
    except aws_errors() as error:
        module.fail_json(msg=f"bucket policy of {params['bucket']}: {type(error).__name__}: {error}")
    diff = {
        "before": json.dumps(before, indent=2, sort_keys=True) + "\n" if before else "",
        "after": json.dumps(after, indent=2, sort_keys=True) + "\n",
        "before_header": f"s3://{params['bucket']} policy",
        "after_header": f"s3://{params['bucket']} policy",
    }
    module.exit_json(changed=changed, policy=after, diff=diff)


if __name__ == "__main__":
    main()
