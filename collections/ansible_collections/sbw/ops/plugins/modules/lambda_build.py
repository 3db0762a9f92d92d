#!/usr/bin/python
"""Ansible module sbw.ops.lambda_build: the reproducible Lambda deployment zip, named by its SHA-256
(sbw_ops.lambda_build.build); an unchanged build writes nothing, so nothing downstream changes."""

from __future__ import annotations

DOCUMENTATION = r"""
module: lambda_build
short_description: Build the Lambda functions' deployment zip
description:
  - Builds one zip for both functions, C(clickstream-lambda-ingest) and C(SBW_Lamda_ETL), holding the
    C(sbw_clickstream) package plus the wheels of C(lambda_src/requirements-lambda.txt) for the Lambda
    runtime, byte-identical for the same inputs, written as C(sbw-clickstream-<sha256>.zip) under O(out_dir).
  - C(changed) is true only when that file did not exist yet.
  - Check mode builds in a throw-away directory and reports the path and key the zip would have; it
    writes nothing under O(out_dir) (the wheel cache O(deps_cache) is content-keyed and may be filled).
version_added: 1.0.0
author: SBW ops
options:
  out_dir:
    description: Directory of the zips.
    type: path
    required: true
  deps_cache:
    description: Wheel cache keyed by the requirements' hash; empty for none.
    type: path
  requirements:
    description: The runtime requirements (default C(lambda_src/requirements-lambda.txt) of the repository).
    type: path
extends_documentation_fragment:
  - sbw.ops.controller
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Build the Lambda zip
  sbw.ops.lambda_build:
    out_dir: "{{ playbook_dir }}/../build/lambda"
  register: sbw_stacks_build
"""

RETURN = r"""
path:
  description: Local path of the zip (where it would be, in check mode).
  returned: success
  type: str
key:
  description: Its S3 key under the artifacts bucket (C(lambda/<file name>)).
  returned: success
  type: str
sha256:
  description: SHA-256 of the zip.
  returned: success
  type: str
size:
  description: Size in bytes.
  returned: success
  type: int
"""

import subprocess
from dataclasses import asdict
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import import_controller


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "out_dir": {"type": "path", "required": True},
            "deps_cache": {"type": "path"},
            "requirements": {"type": "path"},
        },
        supports_check_mode=True,
    )
    lambda_build = import_controller(module, "sbw_ops.lambda_build")
    params = module.params
    requirements = Path(params["requirements"]) if params["requirements"] else lambda_build.REQUIREMENTS
    try:
        result = lambda_build.build(
            Path(params["out_dir"]),
            requirements=requirements,
            deps_cache=Path(params["deps_cache"]) if params["deps_cache"] else None,
            dry_run=module.check_mode,
        )
    except FileNotFoundError as error:
        module.fail_json(msg=f"requirements={requirements}: {error}")
    except subprocess.CalledProcessError as error:
        module.fail_json(
            msg=f"fetching the Lambda runtime's wheels failed: {error}", stderr=error.stderr or ""
        )
    output = asdict(result)
    changed = output.pop("changed")
    diff = {
        "before": "" if changed else f"{result.path}\n",
        "after": f"{result.path}\n",
        "before_header": params["out_dir"],
        "after_header": params["out_dir"],
    }
    module.exit_json(changed=changed, diff=diff, **output)


if __name__ == "__main__":
    main()
