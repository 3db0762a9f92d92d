"""Erasure end to end (issue 14 §8): playbooks/erase_subject.yml, run by ansible-playbook against a
local PostgreSQL (the real migrations) and moto S3 (a versioned raw bucket), removes one person's
events from the warehouse, the rollups, the raw objects (old versions too) and failed/, writes an
audit row, and a later backfill does not bring them back. (Not on the sandbox hosts, which belong
to the sandbox suites: the playbook's warehouse play targets any host; here, localhost.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sbw_clickstream.etl import run_etl
from sbw_clickstream.etl_read import derive_event_id

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_dashboard_rollups import _snapshot
from tests.test_etl_support import Source, connector, etl_config, make_event

REPO = Path(__file__).resolve().parents[1]
SUBJECT = "user-7"


def _versions(s3: S3Bucket, key: str) -> int:
    listing = s3.client.list_object_versions(Bucket=s3.name, Prefix=key)
    return len(
        [v for v in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])] if v["Key"] == key]
    )


def _playbook(db: PgDatabase, s3: S3Bucket, **extra: str) -> subprocess.CompletedProcess[str]:
    ansible = Path(sys.executable).with_name("ansible-playbook")
    variables = {
        "sbw_erase_raw_bucket": s3.name,
        "sbw_erase_dwh_hosts": "localhost",
        "sbw_erase_login_host": db.host,
        "sbw_erase_login_port": str(db.port),
        "sbw_erase_login_user": db.server.superuser,
        "sbw_erase_login_password": db.server.superuser_password,
        "sbw_warehouse_db": db.name,
        "sbw_aws_endpoint_url": s3.endpoint_url or "",
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    return subprocess.run(
        [
            str(ansible),
            "-i",
            "localhost,",
            "-c",
            "local",
            "playbooks/erase_subject.yml",
            "-e",
            json.dumps(variables),
        ],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_erase_subject_everywhere_and_a_backfill_does_not_bring_it_back(
    dw_db: PgDatabase, s3_bucket: S3Bucket
) -> None:
    s3_bucket.client.put_bucket_versioning(
        Bucket=s3_bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    source = Source(s3_bucket.name, s3_bucket.client)
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    theirs = dict(user_id=SUBJECT, user_login_state="logged_in", identity_source="cognito")
    mixed = source.put(t, [make_event(t, source.rng, **theirs), make_event(t, source.rng, user_id="user-8")])
    only = source.put(t + timedelta(seconds=1), [make_event(t, source.rng, **theirs)])
    other = source.put(t + timedelta(seconds=2), [make_event(t, source.rng, user_id="user-9")])
    legacy_events = [
        {
            k: v
            for k, v in make_event(t, source.rng, **extra).items()
            if k not in ("event_id", "received_at", "schema_version", "user_agent", "client_ip")
        }
        for extra in (theirs, {"user_id": None, "user_login_state": "guest", "identity_source": "anonymous"})
    ]
    legacy = source.put_raw(
        t + timedelta(seconds=3), "\n".join(json.dumps(e) for e in legacy_events).encode()
    )
    failed_theirs = "failed/2026/12/01/request-1.json"
    failed_other = "failed/2026/12/01/request-2.json"
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name,
        Key=failed_theirs,
        Body=json.dumps({"body": json.dumps({"user_id": SUBJECT, "x": 1})}),
    )
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key=failed_other, Body=b'{"body": "{\\"user_id\\": \\"u-1\\"}"}'
    )
    config = etl_config(dw_db, source.bucket)
    loaded = run_etl(config, s3_bucket.client, connector(config))
    assert loaded["rows_inserted"] == 6
    assert dw_db.query("SELECT count(*) FROM clickstream_events WHERE user_id = %s", (SUBJECT,)) == [(3,)]

    out = _playbook(dw_db, s3_bucket, user_id=SUBJECT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert SUBJECT not in out.stdout  # personal data stays out of the output (no_log)

    # Warehouse: rows gone, rollups as if they had never been loaded.
    assert dw_db.query("SELECT count(*) FROM clickstream_events WHERE user_id = %s", (SUBJECT,)) == [(0,)]
    assert dw_db.query("SELECT count(*) FROM clickstream_events") == [(3,)]
    after = _snapshot(dw_db)
    dw_db.query("SELECT dash_rollup_rebuild()")
    assert _snapshot(dw_db) == after
    # Raw objects: rewritten without them, or deleted; no old version left to restore them from.
    assert (_versions(s3_bucket, only), _versions(s3_bucket, mixed), _versions(s3_bucket, other)) == (0, 1, 1)
    kept = [json.loads(line) for line in s3_bucket.read(mixed).decode().splitlines()]
    assert [e["user_id"] for e in kept] == ["user-8"]
    legacy_left = [json.loads(line) for line in s3_bucket.read(legacy).decode().splitlines()]
    assert len(legacy_left) == 1 and legacy_left[0]["event_id"] == derive_event_id(legacy, 2)
    assert (_versions(s3_bucket, failed_theirs), _versions(s3_bucket, failed_other)) == (0, 1)
    # The audit row: who (as a hash), what, when.
    audit = dw_db.query(
        "SELECT subject_kind, subject_sha256, warehouse_rows, raw_objects, raw_objects_rewritten, "
        "raw_objects_deleted, failed_objects_deleted, finished_at IS NOT NULL FROM dw_erasures"
    )
    digest = hashlib.sha256(SUBJECT.encode()).hexdigest()
    assert audit == [("user_id", digest, 3, 3, 2, 1, 1, True)]

    # A backfill of the day re-reads every raw object: nothing erased comes back, nothing doubles.
    day = t.date().isoformat()
    again = run_etl(config, s3_bucket.client, connector(config), {"from": day, "to": day})
    assert (again["rows_inserted"], again["objects_quarantined"]) == (0, 0)
    assert dw_db.query("SELECT count(*) FROM clickstream_events") == [(3,)]

    refused = _playbook(dw_db, s3_bucket, user_id=SUBJECT, client_id="c-1")
    assert refused.returncode != 0 and "exactly one of" in refused.stdout
