"""Data lifecycle (issue 14 §8): monthly partitions keyed by the UUIDv7 event id, exactly once
across partitions, retention that drops old months and their rollup cells (real PostgreSQL, real
migrations, moto S3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import yaml
from cfnlint.decode import cfn_yaml
from sbw_clickstream.etl import run_etl
from sbw_clickstream.keys import uuid7

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_etl_support import Source, connector, etl_config, make_event, ms


def _months_ago(n: int) -> datetime:
    now = datetime.now(UTC)
    month = now.year * 12 + now.month - 1 - n
    return datetime(month // 12, month % 12 + 1, 15, 12, 0, tzinfo=UTC)


def _partition_of(db: PgDatabase) -> dict[str, str]:
    rows = db.query("SELECT event_id::text, tableoid::regclass::text FROM clickstream_events")
    return dict(rows)


def test_events_go_to_their_ids_month_and_load_exactly_once(dw_db: PgDatabase, s3_bucket: S3Bucket) -> None:
    source = Source(s3_bucket.name, s3_bucket.client)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    last_month = _months_ago(1)
    dw_db.query("SELECT dw_create_month_partition(%s::date)", (last_month.date(),))
    old_event = make_event(last_month, source.rng, event_id=str(uuid7(ms(last_month))))
    recent = source.put(now, [make_event(now, source.rng), old_event])  # a late, re-sent event
    source.put(now + timedelta(seconds=1), [old_event])  # the same event once more
    legacy = {
        k: v
        for k, v in make_event(now, source.rng).items()
        if k not in ("event_id", "received_at", "schema_version", "user_agent", "client_ip")
    }
    source.put_raw(now + timedelta(seconds=2), json.dumps(legacy).encode())  # id derived (uuid5)
    config = etl_config(dw_db, source.bucket)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert (summary["objects_loaded"], summary["rows_inserted"], summary["duplicates_skipped"]) == (3, 3, 1)
    where = _partition_of(dw_db)
    assert where[old_event["event_id"]] == f"clickstream_events_{last_month:%Y_%m}"
    assert where[source.objects[recent][0]["event_id"]] == f"clickstream_events_{now:%Y_%m}"
    assert sorted(where.values()).count("clickstream_events_default") == 1  # the legacy event
    # Partitions exist ahead: this month and the next two.
    created = {
        r[0] for r in dw_db.query("SELECT relname FROM pg_class WHERE relname ~ '^clickstream_events_[0-9]'")
    }
    for n in (0, -1, -2):
        assert f"clickstream_events_{_months_ago(n):%Y_%m}" in created


def test_retention_drops_old_months_and_their_rollup_cells(dw_db: PgDatabase, s3_bucket: S3Bucket) -> None:
    source = Source(s3_bucket.name, s3_bucket.client)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    for n in (4, 2):
        dw_db.query("SELECT dw_create_month_partition(%s::date)", (_months_ago(n).date(),))
    for n in (4, 2, 0):
        moment = _months_ago(n) if n else now
        source.put(
            moment,
            [
                make_event(
                    moment,
                    source.rng,
                    event_id=str(uuid7(ms(moment))),
                    event_timestamp=moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                )
            ],
        )
    config = etl_config(dw_db, source.bucket)  # first run: no watermark, lists everything
    first = run_etl(config, s3_bucket.client, connector(config))
    assert first["rows_inserted"] == 3 and first["lifecycle"]["dropped"] == []
    assert dw_db.query("SELECT count(DISTINCT bucket) FROM dash_daily")[0][0] == 3
    # Keep 3 months: the month 4 months ago goes, with its rollup cells; 2 months ago stays.
    dw_db.query("UPDATE dw_lifecycle SET retention_months = 3 RETURNING 1")
    second = run_etl(config, s3_bucket.client, connector(config))
    assert second["lifecycle"]["dropped"] == [f"clickstream_events_{_months_ago(4):%Y_%m}"]
    months = sorted(
        r[0] for r in dw_db.query("SELECT to_char(event_timestamp, 'YYYY-MM') FROM clickstream_events")
    )
    assert months == sorted(f"{m:%Y-%m}" for m in (_months_ago(2), now))
    buckets = dw_db.query("SELECT min(bucket) FROM dash_daily")[0][0]
    assert buckets >= datetime.fromisoformat(second["lifecycle"]["cutoff"]).replace(tzinfo=UTC)
    # The writer can trigger the maintenance, never choose what it deletes.
    assert dw_db.etl is not None
    conn = dw_db.connect(dw_db.etl)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("UPDATE dw_lifecycle SET retention_months = 1")
    finally:
        conn.close()


def test_raw_objects_expire_by_the_same_retention_setting() -> None:
    repo = Path(__file__).resolve().parents[1]
    storage = cfn_yaml.load(str(repo / "cloudformation" / "storage.yaml"))
    rules = storage["Resources"]["RawBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (conditional,) = [r for r in rules if "Fn::If" in r]
    condition, rule, otherwise = conditional["Fn::If"]
    assert condition == "HasRawEventsRetention" and otherwise == {"Ref": "AWS::NoValue"}
    assert rule["Prefix"] == "events/" and rule["ExpirationInDays"] == {"Ref": "RawEventsRetentionDays"}
    assert storage["Parameters"]["RawEventsRetentionDays"]["Default"] == "0"  # 0: keep forever
    # One setting: the stack gets 28 days per month of sbw_retention_months, the warehouse the months.
    stacks = (repo / "playbooks" / "stacks.yml").read_text()
    assert 'RawEventsRetentionDays: "{{ (sbw_retention_months | default(0) | int) * 28 }}"' in stacks
    defaults = yaml.safe_load((repo / "roles" / "dw_schema" / "defaults" / "main.yml").read_text())
    assert defaults["dw_schema_retention_months"] == "{{ sbw_retention_months | default(0) }}"
    # 28 days a month (February's length) expire a raw object before its month's partition is
    # dropped (at the start of the month retention_months + 1 after it): a backfill cannot bring a
    # dropped month back. (A late object of the next month's keys may still hold such events: they
    # would go to the DEFAULT partition, which the next maintenance empties below the cutoff.)
    for months in (1, 3, 13):
        written_last = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
        expires = written_last + timedelta(days=28 * months)
        dropped = datetime(2026 + (months + 1) // 12, (months + 1) % 12 + 1, 1, tzinfo=UTC)
        assert expires < dropped, months
