#!/usr/bin/python
"""Ansible module sbw.ops.apt_repo_publish: resolve, download, build, sign and publish the private dwh
host's apt repository to S3 (sbw_ops.apt_repo.build_and_publish), uploading only what the bucket lacks."""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_repo_publish
short_description: Publish the signed apt repository of the private host's packages to S3
description:
  - Computes the dependency closure of O(packages) against the host image's dpkg status O(base_status)
    (plus its pending upgrades unless O(include_upgrades=false)), downloads it into O(cache_dir), builds the
    repository with apt-ftparchive, signs it with the key in O(key_dir) and uploads only the C(.deb) files
    missing from the bucket, the pool first and the indices last (only when C(Packages) changed).
  - One module for the whole flow rather than C(amazon.aws.s3_object) per file; hundreds of files are
    one LIST and parallel PUTs.
  - Check mode resolves and downloads into the content-keyed cache and builds in a throw-away
    directory, then reports what would be uploaded; it uploads and signs nothing.
  - The diff is the published C(Packages) (name and version per line) before and after.
version_added: 1.0.0
author: SBW ops
options:
  packages:
    description: Packages the host installs; the repository carries their closure.
    type: list
    elements: str
    required: true
  base_status:
    description: The host image's dpkg status file.
    type: path
    required: true
  bucket:
    description: The artifacts bucket.
    type: str
    required: true
  prefix:
    description: Key prefix of the repository.
    type: str
    default: repo
  key_dir:
    description: Directory of the signing key (M(sbw.ops.apt_repo_key)).
    type: path
    required: true
  cache_dir:
    description: Persistent cache of C(.deb) files, apt lists and the built tree.
    type: path
    required: true
  suite:
    description: Suite and codename of the repository.
    type: str
    default: bookworm
  architecture:
    description: Debian architecture of the host.
    type: str
    default: amd64
  upstream_sources:
    description: deb822 sources the closure is fetched from (default Debian 12 main, updates, security).
    type: str
  include_upgrades:
    description: Also carry the base system's pending upgrades.
    type: bool
    default: true
  apt_options:
    description: Extra resolver configuration lines (C(Name "value";)).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - sbw.ops.controller
  - sbw.ops.controller.s3
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Publish the repository
  sbw.ops.apt_repo_publish:
    packages: [postgresql-15, shiny-server]
    base_status: ~/.sbw/apt-repo/base-status
    bucket: "{{ sbw_artifacts_bucket }}"
    prefix: repo
    key_dir: ~/.sbw/apt-repo/key
    cache_dir: /var/cache/sbw-sandbox/apt-repo
    region: ap-southeast-1
"""

RETURN = r"""
packages:
  description: Number of C(.deb) files the repository holds.
  returned: success
  type: int
bytes_total:
  description: Their total size.
  returned: success
  type: int
uploaded_debs:
  description: How many C(.deb) files were uploaded (would be, in check mode).
  returned: success
  type: int
uploaded_indices:
  description: The index files uploaded (would be, in check mode), in upload order.
  returned: success
  type: list
  elements: str
fingerprint:
  description: The signing key's fingerprint (empty in check mode before the key exists).
  returned: success
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import (
    S3_OPTIONS,
    aws_errors,
    import_controller,
    package_lines,
    s3_client,
)

ARGUMENT_SPEC = {
    "packages": {"type": "list", "elements": "str", "required": True},
    "base_status": {"type": "path", "required": True},
    "bucket": {"type": "str", "required": True},
    "prefix": {"type": "str", "default": "repo"},
    "key_dir": {"type": "path", "required": True},
    "cache_dir": {"type": "path", "required": True},
    "suite": {"type": "str", "default": "bookworm"},
    "architecture": {"type": "str", "default": "amd64"},
    "upstream_sources": {"type": "str"},
    "include_upgrades": {"type": "bool", "default": True},
    "apt_options": {"type": "list", "elements": "str", "default": []},
    **S3_OPTIONS,
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    apt_repo = import_controller(module, "sbw_ops.apt_repo")
    if not params["packages"]:
        module.fail_json(msg="packages is empty: give the packages the host installs")
    if not params["bucket"]:
        module.fail_json(
            msg="bucket is empty: the artifacts bucket's name (the stacks' sbw_artifacts_bucket)"
        )
    base_status = Path(params["base_status"])
    if not base_status.is_file():
        if module.check_mode:  # the task that makes it would have run in a real run
            module.exit_json(
                changed=True,
                msg=f"base_status={base_status} does not exist yet: nothing resolved in check mode",
                packages=0,
                bytes_total=0,
                uploaded_debs=0,
                uploaded_indices=[],
                fingerprint="",
            )
        module.fail_json(msg=f"base_status={base_status} does not exist (the host image's dpkg status)")
    upstream = apt_repo.Upstream(
        sources=params["upstream_sources"] or apt_repo.DEFAULT_UPSTREAM_SOURCES,
        architecture=params["architecture"],
        include_upgrades=params["include_upgrades"],
        apt_options=tuple(params["apt_options"]),
    )
    try:
        result = apt_repo.build_and_publish(
            s3_client(params["endpoint_url"], params["region"]),
            params["packages"],
            base_status,
            params["bucket"],
            params["prefix"],
            Path(params["key_dir"]),
            Path(params["cache_dir"]),
            upstream=upstream,
            suite=params["suite"],
            dry_run=module.check_mode,
        )
    except (apt_repo.AptRepoError, *aws_errors(), OSError) as error:
        module.fail_json(
            msg=f"publishing to s3://{params['bucket']}/{params['prefix']}: {type(error).__name__}: {error}"
        )
    output = result.as_dict()
    changed = output.pop("changed")
    diff = {
        "before": package_lines(result.index_before),
        "after": package_lines(result.index_after),
        "before_header": f"s3://{params['bucket']}/{params['prefix']} (published)",
        "after_header": f"s3://{params['bucket']}/{params['prefix']} (this run)",
    }
    module.exit_json(changed=changed, diff=diff, **output)


if __name__ == "__main__":
    main()
