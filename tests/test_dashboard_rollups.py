"""The dashboard rollups of migration V005 on a real PostgreSQL 15: queued by the insert trigger,
folded in by dash_rollup_refresh() in any load order, equal to a rebuild from the events, closed to
the ETL's role except for the refresh, and honest about when a distinct count is an estimate."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extras
import pytest
from psycopg2 import errors

from tests import dashboard_support as ds
from tests.fixtures.postgres import PgDatabase

ANCHOR = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SKETCHES = (
    "sessions",
    "users",
    "logged_in_users",
    "guest_visitors",
    "first_visit_clients",
    "clients",
    "funnel_sessions",
)
CELL = "bucket, event_name, category, brand, login_state, identity_source, is_bot, events, revenue, "
PRODUCT = "bucket, product_id, category, brand, is_bot, product_name, events, views, add_to_carts, "
SNAPSHOT = {
    "dash_hourly": CELL + ", ".join(f"hll_cardinality({s})" for s in SKETCHES),
    "dash_daily": CELL + ", ".join(f"hll_cardinality({s})" for s in SKETCHES),
    "dash_product_hourly": PRODUCT + "checkouts, purchases, revenue",
    "dash_product_daily": PRODUCT + "checkouts, purchases, revenue",
}


def _snapshot(db: PgDatabase) -> dict[str, list[tuple]]:
    return {
        # ORDER BY the whole cell key (is_bot included, V022).
        table: db.query(f"SELECT {cols} FROM {table} ORDER BY 1, 2, 3, 4, 5, 6, 7")
        for table, cols in SNAPSHOT.items()
    }


def _insert_as_writer(db: PgDatabase, events: list[dict], refresh_rows: int = 1_000_000) -> int:
    """What the ETL does: INSERT ... ON CONFLICT DO NOTHING as sbw_etl, then (its own transaction)
    dash_rollup_refresh(refresh_rows); returns rows inserted."""
    conn = db.connect(db.etl, autocommit=False)
    try:
        with conn.cursor() as cur:
            cols = ", ".join(ds.COLUMNS)
            psycopg2.extras.execute_values(
                cur,
                f"INSERT INTO clickstream_events ({cols}) VALUES %s ON CONFLICT DO NOTHING",
                [tuple(e[c] for c in ds.COLUMNS) for e in events],
                page_size=len(events),  # one statement, so rowcount is the whole insert's
            )
            inserted = cur.rowcount
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT dash_rollup_refresh(%s)", (refresh_rows,))
            assert cur.fetchone()[0] == min(inserted, refresh_rows)
        conn.commit()
        return inserted
    finally:
        conn.close()


def _kpis(db: PgDatabase, f: ds.Filters) -> dict:
    return ds.run_dashboard_query(db, "kpis", f.as_r())


def _freshness(db: PgDatabase) -> dict:
    return ds.run_dashboard_query(db, "freshness", {"timezone": "UTC"})


def test_rollups_kept_by_the_trigger_in_any_order_equal_a_rebuild(dw_db: PgDatabase) -> None:
    events = ds.make_events(ANCHOR, seed=5, sessions=120)
    shuffled = events[:]
    random.Random(1).shuffle(shuffled)  # sessions arrive in pieces, later steps before earlier ones
    chunks = [shuffled[i::6] for i in range(6)]
    inserted = sum(_insert_as_writer(dw_db, chunk, refresh_rows=40) for chunk in chunks)
    assert inserted == len(events)
    pending = dw_db.query("SELECT count(*) FROM dash_pending")[0][0]
    assert pending == len(events) - 6 * 40  # each refresh took 40; the rest waits for the next one
    assert dw_db.query("SELECT dash_rollup_refresh(100000)")[0][0] == pending
    assert _insert_as_writer(dw_db, chunks[2]) == 0  # duplicates: nothing inserted, nothing counted twice

    incremental = _snapshot(dw_db)
    assert incremental["dash_daily"] and incremental["dash_product_hourly"]
    dw_db.query("SELECT dash_rollup_rebuild()")
    assert _snapshot(dw_db) == incremental

    f = ds.Filters(ANCHOR.date() - timedelta(days=6), ANCHOR.date(), "Asia/Singapore")
    got = _kpis(dw_db, f)
    want = ds.kpis(events, f)
    assert {k: float(got[k]) for k in want} == pytest.approx(want)
    assert got["estimated"] is False


def test_rollups_are_hidden_from_the_etl_role_and_read_only_for_the_dashboard(dw_db: PgDatabase) -> None:
    writer = dw_db.connect(dw_db.etl)
    reader = dw_db.connect(dw_db.dashboard)
    try:
        for sql in (
            "SELECT count(*) FROM dash_hourly",
            "SELECT count(*) FROM dash_product_daily",
            "SELECT dash_rollup_rebuild()",
            "SELECT count(*) FROM dash_cells(now() - interval '1 day', now())",
            "UPDATE dash_daily SET events = 0",
            "SELECT count(*) FROM dash_pending",
            "DELETE FROM dash_pending",
        ):
            with pytest.raises(errors.InsufficientPrivilege), writer.cursor() as cur:
                cur.execute(sql)
        with writer.cursor() as cur:
            cur.execute("SELECT dash_rollup_refresh(10)")
            assert cur.fetchone()[0] == 0
            with pytest.raises(errors.RaiseException, match="max_rows must be a positive integer"):
                cur.execute("SELECT dash_rollup_refresh(0)")
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM dash_cells(now() - interval '1 day', now())")
            assert cur.fetchone()[0] == 0
        for sql in (
            "SELECT dash_rollup_rebuild()",
            "SELECT dash_rollup_refresh(10)",
            "DELETE FROM dash_hourly",
            "TRUNCATE dash_daily",
            "DELETE FROM dash_pending",
        ):
            with pytest.raises(errors.InsufficientPrivilege), reader.cursor() as cur:
                cur.execute(sql)
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize(("sessions", "estimated"), [(8000, False), (30000, True)])
def test_distinct_counts_are_exact_up_to_8192_then_close_estimates(
    dw_db: PgDatabase, sessions: int, estimated: bool
) -> None:
    dw_db.query(
        "INSERT INTO clickstream_events "
        "(event_id, event_timestamp, event_name, client_id, session_id, source_key) "
        "SELECT gen_random_uuid(), %s::timestamptz + make_interval(secs => i), 'page_view', "
        "'c' || (i %% 5000), 's' || i, 'k' FROM generate_series(1, %s) AS i",
        (ANCHOR - timedelta(days=1), sessions),
    )
    assert _kpis(dw_db, ds.Filters(ANCHOR.date() - timedelta(days=2), ANCHOR.date()))["events"] == 0  # queued
    assert _freshness(dw_db)["pending_events"] == sessions  # and the page says so
    assert dw_db.query("SELECT dash_rollup_refresh(100000)")[0][0] == sessions
    assert _freshness(dw_db)["pending_events"] == 0
    got = _kpis(dw_db, ds.Filters(ANCHOR.date() - timedelta(days=2), ANCHOR.date()))
    assert got["events"] == sessions
    assert got["users"] == 5000  # below the exact range
    assert got["estimated"] is estimated
    if estimated:
        assert got["sessions"] == pytest.approx(sessions, rel=0.05)
    else:
        assert got["sessions"] == sessions


def _superuser_insert(db: PgDatabase, events: list[dict]) -> None:
    """Events loaded but not yet refreshed (their ids wait in dash_pending)."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cols = ", ".join(ds.COLUMNS)
            psycopg2.extras.execute_values(
                cur,
                f"INSERT INTO clickstream_events ({cols}) VALUES %s",
                [tuple(e[c] for c in ds.COLUMNS) for e in events],
            )
    finally:
        conn.close()


def test_rebuild_by_day_equals_a_full_rebuild_and_counts_queued_events_once(dw_db: PgDatabase) -> None:
    events = ds.make_events(ANCHOR, seed=9, sessions=120)
    half = len(events) // 2
    _insert_as_writer(dw_db, events[:half])
    _superuser_insert(dw_db, events[half:])  # queued, not refreshed yet
    assert dw_db.query("SELECT count(*) FROM dash_pending")[0][0] == len(events) - half
    # A wrong cell (e.g. left by a delete) is recomputed from the events.
    dw_db.query(
        "UPDATE dash_daily SET events = events + 1000 WHERE bucket = (SELECT min(bucket) FROM dash_daily) "
        "RETURNING 1"
    )
    conn = dw_db.connect()  # autocommit: CALL may COMMIT after each day
    try:
        with conn.cursor() as cur:
            cur.execute("CALL dash_rollup_rebuild_by_day()")
    finally:
        conn.close()
    # The rebuild counted the queued events; the refresh after it must not count them again.
    assert dw_db.query("SELECT dash_rollup_refresh(100000)")[0][0] == 0
    by_day = _snapshot(dw_db)
    total = dw_db.query("SELECT sum(events) FROM dash_daily WHERE category IS NULL AND brand IS NULL")[0][0]
    assert total == len(events)
    dw_db.query("SELECT dash_rollup_rebuild()")
    assert _snapshot(dw_db) == by_day


def _blocked(db: PgDatabase, sql: str, params: tuple = (), user: object = None) -> bool:
    """Whether `sql` waits for a lock longer than 2 s (lock_timeout), in its own session."""
    conn = db.connect(user) if user is not None else db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '2s'")
            try:
                cur.execute(sql, params)
            except errors.LockNotAvailable:
                return True
        return False
    finally:
        conn.close()


@pytest.mark.parametrize("rebuild", ["by_day", "truncate"])
def test_dashboard_and_etl_keep_working_during_a_rebuild_by_day(dw_db: PgDatabase, rebuild: str) -> None:
    events = ds.make_events(ANCHOR, seed=3, sessions=60)
    _insert_as_writer(dw_db, events)
    day = ANCHOR.replace(hour=0)
    rebuilding = dw_db.connect(autocommit=False)  # a rebuild in progress: its transaction is open
    try:
        with rebuilding.cursor() as cur:
            if rebuild == "by_day":
                cur.execute("SELECT dash_rollup_rebuild_period(%s, %s)", (day, day + timedelta(days=1)))
            else:
                cur.execute("SELECT dash_rollup_rebuild()")
        read = "SELECT sum(events) FROM dash_cells(%s, %s) WHERE category IS NULL AND brand IS NULL"
        period = (ANCHOR - timedelta(days=7), ANCHOR + timedelta(days=1))
        new = ds.make_events(ANCHOR + timedelta(days=2), seed=4, sessions=2)
        cols = ", ".join(ds.COLUMNS)
        values = ", ".join("(" + ", ".join(["%s"] * len(ds.COLUMNS)) + ")" for _ in new)
        load = f"INSERT INTO clickstream_events ({cols}) VALUES {values} ON CONFLICT DO NOTHING"
        flat = tuple(e[c] for e in new for c in ds.COLUMNS)
        blocked_reader = _blocked(dw_db, read, period, dw_db.dashboard)
        blocked_loader = _blocked(dw_db, load, flat, dw_db.etl)
    finally:
        rebuilding.rollback()
        rebuilding.close()
    # The full rebuild (V005: TRUNCATE) blocks both; the rebuild by day blocks neither.
    assert (blocked_reader, blocked_loader) == ((False, False) if rebuild == "by_day" else (True, True))
