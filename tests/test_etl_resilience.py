"""The ETL never stalls: stray keys, unreadable objects, backfill cursor, catch-up, stale locks.

Each test here reproduces one way the load path used to stop or fall behind silently (issue 14,
problems 1-5), against a real PostgreSQL with the real migrations and a moto S3 server.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sbw_clickstream.etl import run_etl

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_etl_support import CountingS3, Source, connector, etl_config, make_event, warehouse_rows


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _watermark(db: PgDatabase) -> str | None:
    rows = db.query("SELECT last_key FROM etl_watermarks WHERE prefix = 'events/'")
    return rows[0][0] if rows else None


def _objects(db: PgDatabase) -> dict[str, tuple[str, str | None]]:
    return {k: (s, e) for k, s, e in db.query("SELECT object_key, status, error FROM etl_objects")}


@pytest.fixture
def source(s3_bucket: S3Bucket) -> Source:
    return Source(s3_bucket.name, s3_bucket.client)


STRAY_KEYS = ("events/_manifest.json", "events/README", "events/tmp/part-0001.json")


def test_stray_keys_are_quarantined_once_and_never_move_the_watermark(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    now = _now()
    first = [source.put(now - timedelta(minutes=30) + timedelta(minutes=i)) for i in range(3)]
    for key in STRAY_KEYS:  # all sort after the date folders ('_' and letters > digits)
        body = json.dumps(make_event(now, source.rng))  # even a valid event: the key decides
        s3_bucket.client.put_object(Bucket=source.bucket, Key=key, Body=body)
    config = etl_config(dw_db, source.bucket)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["status"] == "succeeded" and summary["objects_loaded"] == 3
    assert summary["objects_quarantined"] == 3
    assert {q["key"] for q in summary["quarantined"]} == set(STRAY_KEYS)
    assert all("layout" in q["reason"] for q in summary["quarantined"])
    assert _watermark(dw_db) == max(first) == summary["watermark"]
    objects = _objects(dw_db)
    assert all(objects[key][0] == "quarantined" for key in STRAY_KEYS)
    # New events after the stray keys are still found, and the stray keys are not reported again.
    later = source.put(now - timedelta(minutes=5))
    counting = CountingS3(s3_bucket.client)
    again = run_etl(config, counting, connector(config))
    assert (again["objects_loaded"], again["objects_quarantined"], counting.gets) == (1, 0, 1)
    assert _watermark(dw_db) == later
    assert warehouse_rows(dw_db) == source.expected()


def test_a_watermark_already_on_a_stray_key_is_repaired(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    # What the old code left behind: the watermark set to a key outside the layout.
    now = _now()
    loaded = source.put(now - timedelta(minutes=40))
    config = etl_config(dw_db, source.bucket)
    run_etl(config, s3_bucket.client, connector(config))
    dw_db.query("UPDATE etl_watermarks SET last_key = 'events/_manifest.json' RETURNING 1")
    waiting = source.put(now - timedelta(minutes=10))
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["objects_loaded"] == 1 and summary["watermark_repaired_from"] == "events/_manifest.json"
    assert _watermark(dw_db) == waiting > loaded
    assert warehouse_rows(dw_db) == source.expected()


class _Faulty:
    """S3 client whose GetObject fails with a given error code for given keys."""

    def __init__(self, client: Any, errors: dict[str, str]) -> None:
        self.client = client
        self.errors = errors
        self.gets: dict[str, int] = {}

    def list_objects_v2(self, **kwargs: Any) -> Any:
        return self.client.list_objects_v2(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        key = kwargs["Key"]
        self.gets[key] = self.gets.get(key, 0) + 1
        if key in self.errors:
            code = self.errors[key]
            raise ClientError({"Error": {"Code": code, "Message": f"{code} for {key}"}}, "GetObject")
        return self.client.get_object(**kwargs)


def test_permanent_object_errors_quarantine_that_object_and_the_run_goes_on(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    t = _now() - timedelta(minutes=30)
    good = [source.put(t + timedelta(seconds=10 * i), count=2) for i in range(4)]
    denied = source.put_raw(t + timedelta(seconds=5), b"{}")  # e.g. KMS-encrypted: AccessDenied
    corrupt_gzip = source.put_raw(t + timedelta(seconds=15), gzip.compress(b'{"a": 1}\n')[:-12] + b"garbage!")
    not_utf8 = source.put_raw(t + timedelta(seconds=25), b"\xff\xfe\x00 not text")
    zipped_events = [make_event(t, source.rng) for _ in range(3)]
    zipped = source.put_raw(
        t + timedelta(seconds=35), gzip.compress("\n".join(json.dumps(e) for e in zipped_events).encode())
    )
    source.objects[zipped] = zipped_events  # a gzip object of valid events loads
    faulty = _Faulty(s3_bucket.client, {denied: "AccessDenied"})
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=3)
    summary = run_etl(config, faulty, connector(config))
    assert summary["status"] == "succeeded"
    assert (summary["objects_loaded"], summary["objects_quarantined"]) == (5, 3)
    objects = _objects(dw_db)
    assert objects[denied][0] == "quarantined" and "AccessDenied" in (objects[denied][1] or "")
    assert faulty.gets[denied] == 1  # permanent: not retried
    assert objects[corrupt_gzip][0] == "quarantined" and "gzip" in (objects[corrupt_gzip][1] or "")
    assert objects[not_utf8][0] == "quarantined" and "UTF-8" in (objects[not_utf8][1] or "")
    assert all(objects[k][0] == "loaded" for k in [*good, zipped])
    assert warehouse_rows(dw_db) == source.expected()
    assert _watermark(dw_db) == max([*good, denied, corrupt_gzip, not_utf8, zipped])
