#!/usr/bin/python
"""Ansible module sbw.ops.replay_failed: re-validate the failed/ records of a time range against the
contract of the code it imports and ingest the events valid now, idempotently (sbw_ops.replay_failed)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: replay_failed
short_description: Replay failed ingest records after a contract fix
description:
  - Each complete C(failed/) record received in [O(start), O(end)) goes through ingest's own steps with its
    original receive time; the events valid now are written as new objects under C(events/) for the next ETL
    run. Event ids are kept or derived from the record, so replaying twice loads nothing twice.
  - The contract is that of the C(sbw_clickstream) package the module's Python imports (set C(PYTHONPATH)
    in the task's environment to replay against other code).
  - Check mode (or O(dry_run)) counts what would be replayed and writes nothing.
version_added: 1.0.0
author: SBW ops
options:
  bucket:
    description: The raw bucket.
    type: str
    required: true
  start:
    description: First receive time, C(YYYY-MM-DD) or RFC 3339.
    type: str
    required: true
  end:
    description: >-
      End of the range (excluded), C(YYYY-MM-DD) (that whole day is included) or RFC 3339
      (named end, not until, which is a task keyword).
    type: str
    required: true
  dry_run:
    description: Count only, as in check mode.
    type: bool
    default: false
extends_documentation_fragment:
  - sbw.ops.controller
  - sbw.ops.controller.s3
attributes:
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Replay the records of one day
  sbw.ops.replay_failed:
    bucket: "{{ sbw_raw_bucket }}"
    start: "2024-06-01"
    end: "2024-06-01"
"""

RETURN = r"""
summary:
  description: >-
    records, incomplete, still_invalid, replayed_records, replayed_events, still_invalid_events,
    objects_written, dry_run.
  returned: success
  type: dict
"""

import os
from dataclasses import asdict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sbw.ops.plugins.module_utils.controller import (
    S3_OPTIONS,
    import_controller,
    s3_client,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bucket": {"type": "str", "required": True},
            "start": {"type": "str", "required": True},
            "end": {"type": "str", "required": True},
            "dry_run": {"type": "bool", "default": False},
            **S3_OPTIONS,
        },
        supports_check_mode=True,
    )
    params = module.params
    replay_failed = import_controller(module, "sbw_ops.replay_failed")
    config_module = import_controller(module, "sbw_clickstream.ingest_config")
    if not params["bucket"]:
        module.fail_json(msg="bucket is empty: the raw bucket (the stacks' sbw_raw_bucket)")
    try:
        since = replay_failed.parse_moment(params["start"])
    except ValueError as error:
        module.fail_json(msg=f"start={params['start']!r}: {error}")
    try:
        until = replay_failed.parse_moment(params["end"], end_of_day=True)
    except ValueError as error:
        module.fail_json(msg=f"end={params['end']!r}: {error}")
    if until <= since:
        module.fail_json(msg=f"end={params['end']} is not after start={params['start']}")
    try:
        config = config_module.load_config(
            {**os.environ, "RAW_BUCKET": params["bucket"], "AWS_REGION": params["region"]}
        )
    except ValueError as error:
        module.fail_json(msg=f"bucket={params['bucket']!r}: {error}")
    dry_run = params["dry_run"] or module.check_mode
    client = s3_client(params["endpoint_url"] or config.s3_endpoint_url, config.region)
    summary = asdict(replay_failed.replay(client, config, since, until, dry_run))
    changed = summary["objects_written"] > 0 or (module.check_mode and summary["replayed_records"] > 0)
    module.exit_json(changed=changed, summary=summary)


if __name__ == "__main__":
    main()
