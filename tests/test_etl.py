"""SBW_Lamda_ETL against a real PostgreSQL 15 (the real migrations) and a moto S3/SSM server."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sbw_clickstream import etl_handler
from sbw_clickstream.etl import run_etl
from sbw_clickstream.etl_config import ConfigError, clear_password_cache
from sbw_clickstream.etl_load import ETL_LOCK_KEY
from sbw_clickstream.etl_retry import EtlError

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_etl_support import (
    CountingS3,
    Source,
    TcpProxy,
    connector,
    etl_config,
    make_event,
    now_s,
    warehouse_rows,
)


def _fill(source: Source, count: int, start: datetime, step: timedelta, events: int = 2) -> list[str]:
    return [source.put(start + i * step, count=events) for i in range(count)]


def _objects(db: PgDatabase) -> dict[str, tuple[str, int, str | None]]:
    return {
        k: (s, n, e)
        for k, s, n, e in db.query("SELECT object_key, status, rows_in_object, error FROM etl_objects")
    }


def _watermark(db: PgDatabase) -> str | None:
    rows = db.query("SELECT last_key FROM etl_watermarks WHERE prefix = 'events/'")
    return rows[0][0] if rows else None


@pytest.fixture
def source(s3_bucket: S3Bucket) -> Source:
    return Source(s3_bucket.name, s3_bucket.client)


def test_happy_path_then_rerun_loads_nothing(dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket) -> None:
    now = now_s()
    keys = _fill(source, 24, now - timedelta(minutes=50), timedelta(minutes=2), events=3)
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=10)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["status"] == "succeeded" and summary["mode"] == "incremental"
    assert (summary["objects_seen"], summary["objects_loaded"], summary["objects_quarantined"]) == (24, 24, 0)
    assert summary["rows_inserted"] == 72 and summary["duplicates_skipped"] == 0
    assert summary["batches"] == 3 and summary["duration_ms"] >= 0
    assert warehouse_rows(dw_db) == source.expected()
    assert _watermark(dw_db) == max(keys) == summary["watermark"]
    assert set(_objects(dw_db)) == set(keys)
    run = dw_db.query("SELECT status, objects_loaded, rows_inserted, finished_at IS NOT NULL FROM etl_runs")
    assert run == [("succeeded", 24, 72, True)]
    # The run ends by folding what it loaded into the dashboard's rollups (migration V005).
    assert summary["rollup_rows"] == 72
    assert dw_db.query(
        "SELECT count(*), (SELECT sum(events) FROM dash_daily WHERE category IS NULL "
        "AND brand IS NULL) FROM dash_pending"
    ) == [(0, 72)]
    loaded_at = dw_db.query(
        "SELECT count(*) FROM clickstream_events WHERE loaded_at > now() - interval '1 hour'"
    )
    assert loaded_at[0][0] == 72

    # A re-sent event in a new object is a duplicate: skipped, the warehouse keeps the first copy.
    first = source.objects[keys[0]][0]
    source.put(now - timedelta(minutes=1), events=[first, make_event(now, source.rng)])
    again = run_etl(config, s3_bucket.client, connector(config))
    assert (again["objects_loaded"], again["rows_inserted"], again["duplicates_skipped"]) == (1, 1, 1)
    third = run_etl(config, s3_bucket.client, connector(config))
    assert (third["objects_loaded"], third["rows_inserted"], third["s3_get_calls"]) == (0, 0, 0)
    assert third["s3_list_calls"] == 1
    assert warehouse_rows(dw_db) == source.expected()
    assert dw_db.query("SELECT count(*) FROM clickstream_events")[0][0] == 73


def test_no_new_data_costs_one_list_call_whatever_the_history(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    # 3 days of history, many listing pages (page size 10 here, 1000 in production: same logic;
    # benchmarks/bench_etl.py measures 1,000 vs 100,000 objects with the production page size).
    start = now_s() - timedelta(days=3)
    keys = _fill(source, 60, start, timedelta(hours=1, minutes=10), events=1)
    assert len({k[:18] for k in keys}) >= 3  # crosses day boundaries
    config = etl_config(dw_db, source.bucket, ETL_READ_CONCURRENCY=8, ETL_LIST_PAGE_SIZE=10)
    first = run_etl(config, s3_bucket.client, connector(config))
    assert first["objects_loaded"] == 60 and first["s3_list_calls"] == 6
    counting = CountingS3(s3_bucket.client)
    idle = run_etl(config, counting, connector(config))
    assert (counting.lists, counting.gets) == (1, 0), idle
    assert idle["s3_list_calls"] == 1 and idle["objects_loaded"] == 0
    # A new object on the next day is found by the same single call.
    key = source.put(start + 60 * timedelta(hours=1, minutes=10) + timedelta(days=1))
    counting = CountingS3(s3_bucket.client)
    new = run_etl(config, counting, connector(config))
    assert (counting.lists, counting.gets, new["objects_loaded"]) == (1, 1, 1)
    assert _watermark(dw_db) == key
    assert warehouse_rows(dw_db) == source.expected()


def test_late_object_inside_the_lookback_is_loaded(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    now = now_s()
    _fill(source, 5, now - timedelta(minutes=5), timedelta(minutes=1))
    config = etl_config(dw_db, source.bucket, ETL_LOOKBACK_MINUTES=15)
    run_etl(config, s3_bucket.client, connector(config))
    watermark = _watermark(dw_db)
    late = source.put(now - timedelta(minutes=14))  # written late: its key sorts before the watermark
    too_late = source.put(now - timedelta(minutes=40))
    assert late < watermark and too_late < watermark
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["objects_loaded"] == 1 and _watermark(dw_db) == watermark
    assert late in _objects(dw_db) and too_late not in _objects(dw_db)
    # Outside the window: a backfill of its day picks it up (and loads nothing twice).
    day = (now - timedelta(minutes=40)).date().isoformat()
    backfill = run_etl(
        config, s3_bucket.client, connector(config), {"from": day, "to": now.date().isoformat()}
    )
    assert backfill["mode"] == "backfill" and backfill["rows_inserted"] == len(source.objects[too_late])
    assert backfill["objects_loaded"] == 7 and backfill["duplicates_skipped"] == 11
    assert warehouse_rows(dw_db) == source.expected()
    assert _watermark(dw_db) == watermark


def test_poison_objects_are_quarantined_while_the_others_load(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    now = now_s()
    t = now - timedelta(minutes=30)
    good = [source.put(t + timedelta(seconds=10 * i), count=2) for i in range(6)]
    poison = {
        source.put_raw(t + timedelta(seconds=5), b"{this is not json"): "invalid JSON",
        source.put_raw(
            t + timedelta(seconds=15),
            json.dumps(make_event(t, source.rng, event_name="Not A Name")).encode(),
        ): "/event_name",
        source.put_raw(
            t + timedelta(seconds=25), b'{"event_name": "page_view"}\n' + b"x" * 5000
        ): "too large",
        source.put_raw(
            t + timedelta(seconds=35),
            json.dumps(make_event(t, source.rng, context_product_name="nul\u0000inside")).encode(),
        ): "NUL",
        source.put_raw(
            t + timedelta(seconds=45),
            json.dumps(make_event(t, source.rng, user_agent="lone \ud800 surrogate")).encode(),
        ): "surrogate",
    }
    config = etl_config(dw_db, source.bucket, ETL_MAX_OBJECT_BYTES=4096, ETL_BATCH_OBJECTS=4)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["status"] == "succeeded"
    assert (summary["objects_loaded"], summary["objects_quarantined"]) == (6, 5)
    assert {q["key"] for q in summary["quarantined"]} == set(poison)
    objects = _objects(dw_db)
    for key, reason in poison.items():
        status, rows, error = objects[key]
        assert status == "quarantined" and rows == 0 and reason.lower() in (error or "").lower(), (key, error)
    assert all(objects[k][0] == "loaded" for k in good)
    assert warehouse_rows(dw_db) == source.expected()
    assert _watermark(dw_db) == max([*good, *poison])
    assert dw_db.query("SELECT objects_quarantined FROM etl_runs")[0][0] == 5
    counting = CountingS3(s3_bucket.client)
    run_etl(config, counting, connector(config))
    assert counting.gets == 0  # quarantined objects are not read again by incremental runs


def test_both_object_shapes_and_legacy_events(dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket) -> None:
    now = now_s() - timedelta(minutes=10)
    ndjson = source.put(now, count=3)
    pretty = source.put(now + timedelta(seconds=1), count=1, shape="pretty")
    legacy_event = {
        k: v
        for k, v in make_event(now, source.rng).items()
        if k not in ("event_id", "received_at", "schema_version", "user_agent", "client_ip")
    }
    legacy = source.put_raw(now + timedelta(seconds=2), json.dumps(legacy_event, indent=4).encode())
    config = etl_config(dw_db, source.bucket)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert (summary["objects_loaded"], summary["rows_inserted"], summary["event_ids_derived"]) == (3, 5, 1)
    assert summary["legacy_events"] == 1
    rows = dw_db.query(
        "SELECT event_id::text, received_at, schema_version FROM clickstream_events WHERE source_key = %s",
        (legacy,),
    )
    assert len(rows) == 1 and rows[0][1:] == (None, None)
    loaded = warehouse_rows(dw_db)
    assert all(eid in loaded for eid in source.expected([ndjson, pretty]))
    # Re-reading the legacy object derives the same id: nothing new.
    day = now.date().isoformat()
    again = run_etl(config, s3_bucket.client, connector(config), {"from": day, "to": day})
    assert (again["rows_inserted"], again["duplicates_skipped"]) == (0, 5)
    assert dw_db.query("SELECT count(*) FROM clickstream_events")[0][0] == 5


def test_backfill_restores_a_day_and_leaves_the_watermark(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    today = now_s()
    yesterday = today - timedelta(days=1)
    old = _fill(source, 4, yesterday, timedelta(minutes=5))
    new = _fill(source, 3, today - timedelta(minutes=20), timedelta(minutes=5))
    config = etl_config(dw_db, source.bucket)
    run_etl(config, s3_bucket.client, connector(config))
    watermark = _watermark(dw_db)
    dw_db.query("DELETE FROM clickstream_events WHERE source_key = ANY(%s) RETURNING 1", (old,))
    day = yesterday.date().isoformat()
    counting = CountingS3(s3_bucket.client)
    summary = run_etl(config, counting, connector(config), {"from": day, "to": day})
    assert summary["status"] == "succeeded" and summary["mode"] == "backfill"
    assert counting.gets == 4 and summary["objects_seen"] == 4  # only that day's objects
    assert summary["rows_inserted"] == 8
    assert warehouse_rows(dw_db) == source.expected()
    assert _watermark(dw_db) == watermark and new
    assert dw_db.query("SELECT trigger FROM etl_runs ORDER BY run_id")[-1][0] == "backfill"
    with pytest.raises(ValueError, match="from"):
        run_etl(config, s3_bucket.client, connector(config), {"from": "tomorrow", "to": day})


def test_db_down_mid_run_is_retried(dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket) -> None:
    _fill(source, 30, now_s() - timedelta(minutes=60), timedelta(minutes=1))
    proxy = TcpProxy(dw_db.port)
    try:

        def outage(n: int) -> None:
            if n == 12:
                proxy.down()
                threading.Timer(0.4, proxy.restore).start()

        config = etl_config(
            dw_db, source.bucket, ETL_BATCH_OBJECTS=5, ETL_READ_CONCURRENCY=1, ETL_RETRY_BASE_SECONDS=0.2
        )
        summary = run_etl(config, CountingS3(s3_bucket.client, outage), connector(config, proxy.port))
    finally:
        proxy.close()
    assert summary["status"] == "succeeded" and summary["objects_loaded"] == 30
    assert warehouse_rows(dw_db) == source.expected()


def test_db_down_for_good_fails_clearly_without_partial_commit(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    keys = sorted(_fill(source, 30, now_s() - timedelta(minutes=60), timedelta(minutes=1)))
    proxy = TcpProxy(dw_db.port)
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=5, ETL_READ_CONCURRENCY=1, ETL_DB_RETRIES=2)
    try:
        failing = CountingS3(s3_bucket.client, lambda n: proxy.down() if n == 13 else None)
        with pytest.raises(EtlError, match=r"database: .* failed after 3 attempts"):
            run_etl(config, failing, connector(config, proxy.port))
    finally:
        proxy.close()
    # Exactly the committed batches are there: whole batches, bookkeeping and watermark agreeing.
    objects = _objects(dw_db)
    assert len(objects) % 5 == 0 and 0 < len(objects) < 30
    assert sorted(objects) == keys[: len(objects)]
    assert _watermark(dw_db) == keys[len(objects) - 1]
    assert warehouse_rows(dw_db) == source.expected(sorted(objects))
    # The next run (database back) finishes the job and marks the dead run abandoned.
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["objects_loaded"] == 30 - len(objects)
    assert warehouse_rows(dw_db) == source.expected()
    statuses = [r[0] for r in dw_db.query("SELECT status FROM etl_runs ORDER BY run_id")]
    assert statuses == ["abandoned", "succeeded"]


def test_s3_errors_are_retried_then_fail_clearly(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    _fill(source, 10, now_s() - timedelta(minutes=30), timedelta(minutes=1))
    error = ClientError(
        {"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}}, "Get"
    )
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=3, ETL_READ_CONCURRENCY=1, ETL_S3_RETRIES=2)

    def always_after_4(n: int) -> None:
        if n > 4:
            raise error

    with pytest.raises(EtlError, match=r"S3 GetObject .* failed after 3 attempts"):
        run_etl(config, CountingS3(s3_bucket.client, always_after_4), connector(config))
    assert len(_objects(dw_db)) == 3  # the first whole batch only
    flaky = CountingS3(s3_bucket.client, lambda n: (_ for _ in ()).throw(error) if n in (2, 3) else None)
    summary = run_etl(config, flaky, connector(config))
    assert summary["status"] == "succeeded" and summary["objects_loaded"] == 7
    assert warehouse_rows(dw_db) == source.expected()


def test_overlapping_runs_never_double_load(dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket) -> None:
    _fill(source, 40, now_s() - timedelta(minutes=60), timedelta(minutes=1), events=2)
    config = etl_config(dw_db, source.bucket, ETL_BATCH_OBJECTS=5)
    holder = dw_db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (ETL_LOCK_KEY,))
        skipped = run_etl(config, s3_bucket.client, connector(config))
        assert skipped["status"] == "skipped" and "lock" in skipped["error"]
        assert dw_db.query("SELECT count(*) FROM etl_runs")[0][0] == 0
    finally:
        holder.close()
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        results.append(run_etl(config, s3_bucket.client, connector(config)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    assert {r["status"] for r in results} <= {"succeeded", "skipped"}
    assert sum(r["rows_inserted"] for r in results) == 80
    assert sum(r["duplicates_skipped"] for r in results) == 0
    assert warehouse_rows(dw_db) == source.expected()


def test_budget_stops_before_the_deadline_and_the_next_run_continues(
    dw_db: PgDatabase, source: Source, s3_bucket: S3Bucket
) -> None:
    keys = sorted(_fill(source, 40, now_s() - timedelta(minutes=60), timedelta(minutes=1)))
    config = etl_config(
        dw_db, source.bucket, ETL_BATCH_OBJECTS=5, ETL_READ_CONCURRENCY=2, ETL_DEADLINE_MARGIN_SECONDS=20
    )
    checks = {"n": 0}

    def remaining_ms() -> int:
        checks["n"] += 1
        return 300_000 if checks["n"] < 12 else 19_000

    summary = run_etl(config, s3_bucket.client, connector(config), remaining_ms=remaining_ms)
    assert summary["status"] == "partial" and summary["stopped_early"]
    loaded = sorted(_objects(dw_db))
    assert 0 < len(loaded) < 40 and loaded == keys[: len(loaded)]
    assert _watermark(dw_db) == loaded[-1]
    assert warehouse_rows(dw_db) == source.expected(loaded)
    # Out of time: the rollup refresh waits for the next run, the loaded rows stay queued.
    assert summary["rollup_rows"] == 0
    assert dw_db.query("SELECT count(*) FROM dash_pending")[0][0] == summary["rows_inserted"] > 0
    rest = run_etl(config, s3_bucket.client, connector(config), remaining_ms=lambda: 300_000)
    assert rest["status"] == "succeeded" and rest["objects_loaded"] == 40 - len(loaded)
    assert warehouse_rows(dw_db) == source.expected()
    assert rest["rollup_rows"] == summary["rows_inserted"] + rest["rows_inserted"]
    assert dw_db.query("SELECT count(*) FROM dash_pending")[0][0] == 0


class _Context:
    aws_request_id = "req-1234"

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def test_handler_reads_the_password_from_ssm_once_per_container(
    dw_db: PgDatabase,
    source: Source,
    moto_endpoint_url: str,
    aws_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert dw_db.etl is not None
    parameter = f"/sbw/dwh/etl_password-{dw_db.name}"
    ssm = aws_client("ssm")
    ssm.put_parameter(Name=parameter, Value=dw_db.etl.password, Type="SecureString")
    env = {
        "DWH_HOST": dw_db.host,
        "DWH_PORT": str(dw_db.port),
        "DWH_USER": dw_db.etl.user,
        "DWH_DATABASE": dw_db.name,
        "DWH_PASSWORD_PARAM": parameter,
        "RAW_BUCKET": source.bucket,
        "AWS_REGION": "ap-southeast-1",
        "AWS_ENDPOINT_URL": moto_endpoint_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DWH_PASSWORD", raising=False)
    etl_handler.reset_container()
    clear_password_cache()
    stream = io.StringIO()
    previous = etl_handler.logger.registered_handler.setStream(stream)
    try:
        source.put(now_s() - timedelta(minutes=3), count=2)
        first = etl_handler.handler({"id": "evt", "source": "aws.events"}, _Context())
        assert first["status"] == "succeeded" and first["rows_inserted"] == 2
        ssm.delete_parameter(Name=parameter)  # same container: the cached password is used
        source.put(now_s() - timedelta(minutes=2), count=1)
        second = etl_handler.handler({}, _Context())
        assert second["rows_inserted"] == 1
        logged = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
        finished = [entry for entry in logged if entry.get("message") == "ETL run finished"]
        assert len(finished) == 2 and finished[0]["correlation_id"] == "req-1234"
        assert finished[0]["summary"]["rows_inserted"] == 2
        assert dw_db.etl.password not in json.dumps(logged)
        etl_handler.reset_container()
        clear_password_cache()  # a new container must read SSM again: the parameter is gone
        with pytest.raises(ConfigError, match="DWH_PASSWORD_PARAM"):
            etl_handler.handler({}, _Context())
        monkeypatch.setenv("DWH_PORT", "not-a-port")
        etl_handler.reset_container()
        with pytest.raises(ConfigError, match=r"^DWH_PORT: "):
            etl_handler.handler({}, _Context())
    finally:
        etl_handler.logger.registered_handler.setStream(previous)
        etl_handler.reset_container()
        clear_password_cache()
    assert warehouse_rows(dw_db) == source.expected()
