"""Documentation the sbw.ops modules share (`extends_documentation_fragment: [sbw.ops.controller, ...]`):
where they run, their check mode, and the S3 connection options of those that reach a bucket."""

from __future__ import annotations


class ModuleDocFragment:
    """sbw.ops.controller (where and how every module runs) and sbw.ops.controller.s3 (the bucket's API)."""

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    support: full
notes:
  - Runs on the controller under the project's venv Python (localhost's ansible_playbook_python), where the
    C(sbw_ops) package and boto3 are installed; another interpreter fails naming itself.
"""

    S3 = r"""
options:
  endpoint_url:
    description: S3 endpoint (the sandbox's moto); empty on AWS.
    type: str
    default: ""
  region:
    description: AWS region of the bucket.
    type: str
    default: ap-southeast-1
"""
