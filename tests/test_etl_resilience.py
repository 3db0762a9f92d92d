"""The ETL never stalls: stray keys, unreadable objects, backfill cursor, catch-up, stale locks.

Each test here reproduces one way the load path used to stop or fall behind silently (issue 14,
problems 1-5), against a real PostgreSQL with the real migrations and a moto S3 server.
"""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sbw_clickstream.etl import run_etl
from sbw_clickstream.etl_load import ETL_LOCK_KEY

from benchmarks.bench_etl import FakeS3
from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_etl_support import (
    CountingS3,
    Source,
    connector,
    etl_config,
    make_event,
    now_s,
    wait_until,
    warehouse_rows,
)


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
    now = now_s()
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
    now = now_s()
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
    t = now_s() - timedelta(minutes=30)
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


class _Budget:
    """remaining_ms of a Lambda that runs out after `checks` deadline checks (one run each)."""

    def __init__(self, checks: int) -> None:
        self.checks = checks
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return 300_000 if self.n <= self.checks else 1_000


def test_a_large_backfill_resumes_where_it_stopped_until_done(dw_db: PgDatabase) -> None:
    # 200,000 objects (2.3 days, one event each) in the in-process fake S3 of the ETL benchmarks;
    # each run's budget ends after ~60,000 objects, as a 300 s Lambda would on a big range.
    s3 = FakeS3(200_000, events=1)
    config = etl_config(dw_db, "bench-raw", ETL_BATCH_OBJECTS=5000, ETL_BATCH_ROWS=100_000)
    event = {"from": "2026-01-01", "to": "2026-01-03"}
    first = run_etl(config, s3, connector(config), event, remaining_ms=_Budget(60_000))
    assert first["status"] == "partial" and first["mode"] == "backfill"
    assert first["backfill"]["resumed_after"] is None
    done = first["backfill"]["objects_done"]
    assert 50_000 <= done < 200_000 and first["backfill"]["cursor"] == s3.keys[done - 1]
    runs = [first]
    # The catch-up schedule continues the open backfill by itself (no new invocation needed).
    while runs[-1]["status"] == "partial" and len(runs) < 6:
        runs.append(
            run_etl(config, s3, connector(config), {"trigger": "catch_up"}, _Budget(60_000), "catch_up")
        )
    assert [r["status"] for r in runs] == ["partial", "partial", "partial", "succeeded"]
    progress = [r["backfill"]["objects_done"] for r in runs]
    assert progress == sorted(progress) and progress[-1] == 200_000
    assert all(r["backfill"]["resumed_after"] == p["backfill"]["cursor"] for p, r in itertools.pairwise(runs))
    assert runs[-1]["backfill"]["finished"] is True
    # Every object read once (no run started over), but for the read-ahead window of each stop.
    in_flight = 2 * config.read_concurrency
    assert 200_000 <= s3.gets <= 200_000 + 3 * in_flight
    assert dw_db.query("SELECT count(*) FROM clickstream_events")[0][0] == 200_000
    assert dw_db.query("SELECT objects_done, finished_at IS NOT NULL FROM etl_backfills") == [(200_000, True)]
    assert _watermark(dw_db) is None  # a backfill never moves the incremental watermark
    # Finished: the catch-up is idle again.
    gets = s3.gets
    idle = run_etl(config, s3, connector(config), {"trigger": "catch_up"}, None, "catch_up")
    assert idle["status"] == "idle" and s3.gets == gets


def test_catch_up_is_o1_when_nothing_is_pending_and_finishes_a_partial_run(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    keys = sorted(source.put(now_s() - timedelta(minutes=40) + timedelta(seconds=20 * i)) for i in range(30))
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=5, ETL_READ_CONCURRENCY=2)
    catch_up = {"trigger": "catch_up"}
    counting = CountingS3(s3_bucket.client)
    before = run_etl(config, counting, connector(config), catch_up, trigger="catch_up")
    assert before["status"] == "idle" and (counting.lists, counting.gets) == (0, 0)
    partial = run_etl(config, s3_bucket.client, connector(config), remaining_ms=_Budget(12))
    assert partial["status"] == "partial" and 0 < partial["objects_loaded"] < 30
    rest = run_etl(config, s3_bucket.client, connector(config), catch_up, trigger="catch_up")
    assert rest["status"] == "succeeded" and rest["objects_loaded"] == 30 - partial["objects_loaded"]
    assert warehouse_rows(dw_db) == source.expected() and _watermark(dw_db) == keys[-1]
    counting = CountingS3(s3_bucket.client)
    after = run_etl(config, counting, connector(config), catch_up, trigger="catch_up")
    assert after["status"] == "idle" and (counting.lists, counting.gets) == (0, 0)
    triggers = [r[0] for r in dw_db.query("SELECT trigger FROM etl_runs ORDER BY run_id")]
    assert triggers == ["schedule", "catch_up"]  # idle catch-ups leave no run row


def test_the_lock_holder_is_reported_and_a_stale_one_is_ended(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    source.put(now_s() - timedelta(minutes=5))
    assert dw_db.etl is not None
    holder = dw_db.connect(dw_db.etl)  # a dead run's session: same login, never lets go
    with holder.cursor() as cur:
        cur.execute("SET application_name = 'sbw_etl_dead_run'")
        cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (ETL_LOCK_KEY,))
        pid = cur.fetchone()[1]
    config = etl_config(dw_db, source.bucket)
    skipped = run_etl(config, s3_bucket.client, connector(config))
    assert skipped["status"] == "skipped"
    lock = skipped["lock_holder"]
    assert (lock["pid"], lock["application_name"], lock["user"]) == (pid, "sbw_etl_dead_run", dw_db.etl.user)
    assert lock["session_age_seconds"] >= 0 and "ended_as_stale" not in lock
    # Older than any Lambda may live: the holder is dead, its session is ended and the run goes on.
    stale = etl_config(dw_db, source.bucket, ETL_LOCK_STALE_SECONDS=1)
    wait_until(
        lambda: dw_db.query(
            "SELECT now() - backend_start > interval '1.2 s' FROM pg_stat_activity WHERE pid = %s", (pid,)
        )[0][0],
        what="the holder to age",
    )
    summary = run_etl(stale, s3_bucket.client, connector(stale))
    assert summary["status"] == "succeeded" and summary["objects_loaded"] == 1
    assert summary["lock_holder"]["pid"] == pid and summary["lock_holder"]["ended_as_stale"] is True
    assert dw_db.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(0,)]
    holder.close()
