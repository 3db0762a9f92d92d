"""The dimension rollups of migration V031 and the dashboard blocks that read them, on a real
PostgreSQL 15: every block (Acquisition, Pages, Technology, Retention) equals an independent Python
oracle over a known data set (tests/dashboard_dimensions_support.py), bots excluded or included; cells kept by
the refresh in any arrival order equal a rebuild; periods older than the hourly window are rounded
to whole UTC days and say so; the ETL's role may only call the refresh."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2 import errors

from tests import dashboard_dimensions_support as dd
from tests import dashboard_support as ds
from tests.fixtures.postgres import PgDatabase

ANCHOR = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
SNAPSHOT = {
    "dash_dim_hourly": "SELECT * FROM dash_dim_hourly ORDER BY 1, 2, 3, 4",
    "dash_dim_daily": "SELECT * FROM dash_dim_daily ORDER BY 1, 2, 3, 4",
    "dash_page_hourly": "SELECT bucket, is_bot, page_path, views, hll_cardinality(sessions) "
    "FROM dash_page_hourly ORDER BY 1, 2, 3",
    "dash_page_daily": "SELECT bucket, is_bot, page_path, views, hll_cardinality(sessions) "
    "FROM dash_page_daily ORDER BY 1, 2, 3",
    "dash_visitor_daily": "SELECT bucket, is_bot, hll_cardinality(visitors) "
    "FROM dash_visitor_daily ORDER BY 1, 2",
    "dash_retention": "SELECT * FROM dash_retention ORDER BY 1, 2, 3",
    "dash_visitor_weeks": "SELECT * FROM dash_visitor_weeks ORDER BY 1, 2, 3",
}


def _load(db: PgDatabase, events: list[dict], batches: int = 1) -> None:
    db.query("UPDATE dash_dim_state SET hourly_days = 40")  # FILTERS reach 34 days back: keep their hours
    conn = db.connect()
    try:
        dd.load_dimension_events(conn, events, batches)
    finally:
        conn.close()


def _values(f: ds.Filters, include_bots: bool, **extra: str) -> dict[str, str]:
    return {**f.as_r(), "include_bots": "true" if include_bots else "false", **extra}


def _by_value(rows: list[dict], key: str = "value") -> dict:
    return {
        r[key]: {"sessions": r["sessions"], "conversions": r["conversions"], "revenue": float(r["revenue"])}
        for r in rows
    }


@pytest.fixture
def loaded(dw_db: PgDatabase) -> tuple[PgDatabase, list[dict]]:
    events = dd.make_dimension_events(ANCHOR)
    _load(dw_db, sorted(events, key=lambda e: e["event_timestamp"]), batches=3)  # as ingest sends them
    return dw_db, events


FILTERS = [
    ds.Filters(ANCHOR.date() - timedelta(days=6), ANCHOR.date()),
    ds.Filters(ANCHOR.date() - timedelta(days=6), ANCHOR.date(), "Asia/Singapore"),
    ds.Filters(ANCHOR.date() - timedelta(days=34), ANCHOR.date(), "America/New_York"),
]


@pytest.mark.parametrize("include_bots", [False, True])
def test_every_dimension_block_equals_the_oracle(loaded, include_bots: bool) -> None:
    db, events = loaded
    bots = sum(e["is_bot"] for e in events)
    assert 0 < bots < len(events)  # the data set has both
    for f in FILTERS:
        for dimension in dd.DIMENSIONS:
            rows = dd.run_dashboard_rows(
                db, "dimension_sessions", _values(f, include_bots, dimension=dimension, row_limit="100")
            )
            want = dd.dimension_sessions(events, f, dimension, include_bots)
            assert _by_value(rows) == want, (f, dimension)
            assert [r["sessions"] for r in rows] == sorted((r["sessions"] for r in rows), reverse=True)
            assert not any(r["estimated"] for r in rows)
            total = sum(r["sessions"] for r in rows)
            assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0, abs=0.01 if total else 1)
        # first-event attribution: the later internal page views never make an 'Internal' session
        assert "Internal" not in dd.dimension_sessions(events, f, "channel_group", include_bots)

        rows = dd.run_dashboard_rows(
            db, "dimension_sessions", _values(f, include_bots, dimension="campaign", row_limit="100")
        )
        got = {tuple(k.split("\x1f")): v for k, v in _by_value(rows).items()}
        assert got == dd.dimension_sessions(events, f, "campaign", include_bots)

        rows = dd.run_dashboard_rows(
            db, "top_pages", _values(f, include_bots, order_by="views", row_limit="100")
        )
        got = {r["page_path"]: {k: r[k] for k in ("views", "sessions", "entries", "exits")} for r in rows}
        assert got == dd.top_pages(events, f, include_bots)
        assert [r["views"] for r in rows] == sorted((r["views"] for r in rows), reverse=True)
        by_exits = dd.run_dashboard_rows(
            db, "top_pages", _values(f, include_bots, order_by="exits", row_limit="3")
        )
        assert [r["exits"] for r in by_exits] == sorted((v["exits"] for v in got.values()), reverse=True)[:3]

        row = dd.run_dashboard_rows(db, "pages_summary", _values(f, include_bots))[0]
        want = dd.pages_summary(events, f, include_bots)
        assert (row["page_views"], row["sessions"]) == (want["page_views"], want["sessions"])
        assert float(row["views_per_session"]) == pytest.approx(want["views_per_session"])

        rows = dd.run_dashboard_rows(db, "retention_cohorts", _values(f, include_bots))
        assert {(r["cohort_week"], r["week_n"]): r["visitors"] for r in rows} == dd.retention_cohorts(
            events, f, include_bots
        )
        for r in rows:
            assert float(r["returning_share"]) == pytest.approx(round(r["visitors"] / r["cohort_size"], 4))

        row = dd.run_dashboard_rows(db, "active_users", _values(f, include_bots))[0]
        want = dd.active_users(events, f, include_bots)
        assert float(row["dau"]) == pytest.approx(want["dau"], abs=0.006)
        assert (row["wau"], row["mau"]) == (want["wau"], want["mau"])
        assert float(row["stickiness"]) == pytest.approx(want["stickiness"], abs=1e-4)
        assert row["estimated"] is False

        rows = dd.run_dashboard_rows(db, "daily_visitors", _values(f, include_bots))
        want = dd.daily_visitors(events, f.date_from, f.date_to, include_bots)
        assert {r["day"]: r["visitors"] for r in rows} == {d.isoformat(): len(v) for d, v in want.items()}
    # the longest period has several cohorts with returning visitors
    cohorts = dd.retention_cohorts(events, FILTERS[2], include_bots)
    assert len({c for c, _ in cohorts}) >= 4 and any(n > 0 for _, n in cohorts)


def _snapshot(db: PgDatabase) -> dict[str, list[tuple]]:
    return {table: db.query(sql) for table, sql in SNAPSHOT.items()}


def test_any_arrival_order_equals_a_rebuild(dw_db: PgDatabase) -> None:
    """Late events (an earlier first event, a later exit, a purchase, an earlier first week) move
    a session's or a visitor's contribution; the incremental cells end equal to a rebuild."""
    events = dd.make_dimension_events(ANCHOR, seed=23, sessions=120)
    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    # keep every session's state (the default drops it 3 days after the session's last event)
    dw_db.query("UPDATE dash_dim_state SET session_state_days = 100")
    _load(dw_db, shuffled, batches=9)
    incremental = _snapshot(dw_db)
    assert dw_db.query("SELECT count(*) FROM dash_dim_pending") == [(0,)]
    dw_db.query("SELECT dash_dimension_rebuild()")
    assert _snapshot(dw_db) == incremental
    f = FILTERS[2]
    rows = dd.run_dashboard_rows(
        dw_db, "dimension_sessions", _values(f, False, dimension="entry_page", row_limit="99")
    )
    assert _by_value(rows) == dd.dimension_sessions(events, f, "entry_page")


def test_an_event_later_than_the_session_state_is_one_more_session(dw_db: PgDatabase) -> None:
    """The documented approximation: once a session's state is dropped (session_state_days after
    its last event, measured from the newest event), a straggler of it counts as a session of its
    own; a rebuild makes it exact again."""
    events = sorted(
        dd.make_dimension_events(ANCHOR, seed=31, sessions=60), key=lambda e: e["event_timestamp"]
    )
    old = next(
        e for e in events if ANCHOR - timedelta(days=20) < e["event_timestamp"] < ANCHOR - timedelta(days=10)
    )
    straggler = next(
        e
        for e in events
        if ds.session_key(e) == ds.session_key(old) and e["event_timestamp"] > old["event_timestamp"]
    )
    _load(dw_db, [e for e in events if e is not straggler])
    _load(dw_db, [straggler])
    f = FILTERS[2]
    got = _by_value(
        dd.run_dashboard_rows(dw_db, "dimension_sessions", _values(f, True, dimension="os", row_limit="99"))
    )
    want = dd.dimension_sessions(events, f, "os", True)
    assert sum(v["sessions"] for v in got.values()) == sum(v["sessions"] for v in want.values()) + 1
    dw_db.query("SELECT dash_dimension_rebuild()")
    got = _by_value(
        dd.run_dashboard_rows(dw_db, "dimension_sessions", _values(f, True, dimension="os", row_limit="99"))
    )
    assert got == want


def test_periods_older_than_the_hourly_window_are_rounded_and_marked(dw_db: PgDatabase) -> None:
    events = dd.make_dimension_events(ANCHOR, seed=29, sessions=120)
    _load(dw_db, events)
    dw_db.query("UPDATE dash_dim_state SET hourly_days = 3")
    dw_db.query("SELECT dash_dimension_rebuild()")
    (hourly_from,) = dw_db.query("SELECT hourly_from FROM dash_dim_state")[0]
    assert hourly_from == datetime(2026, 3, 8, tzinfo=UTC)
    assert dw_db.query("SELECT min(bucket) >= %s FROM dash_dim_hourly", (hourly_from,)) == [(True,)]
    # recent: exact in Singapore time
    recent = ds.Filters(ANCHOR.date() - timedelta(days=1), ANCHOR.date(), "Asia/Singapore")
    rows = dd.run_dashboard_rows(
        dw_db, "dimension_sessions", _values(recent, False, dimension="os", row_limit="99")
    )
    assert _by_value(rows) == dd.dimension_sessions(events, recent, "os") and not rows[0]["estimated"]
    # old: Singapore days (UTC+8) rounded to the nearest UTC midnight, i.e. read as UTC days
    old = ds.Filters(ANCHOR.date() - timedelta(days=20), ANCHOR.date() - timedelta(days=10), "Asia/Singapore")
    rows = dd.run_dashboard_rows(
        dw_db, "dimension_sessions", _values(old, False, dimension="os", row_limit="99")
    )
    as_utc = ds.Filters(old.date_from, old.date_to, "UTC")
    assert _by_value(rows) == dd.dimension_sessions(events, as_utc, "os")
    assert all(r["estimated"] for r in rows) and rows
    assert dd.run_dashboard_rows(dw_db, "pages_summary", _values(old, False))[0]["estimated"] is True


def test_the_etl_role_may_only_refresh(dw_db: PgDatabase) -> None:
    conn = dw_db.connect(dw_db.etl)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT dash_dimension_refresh(10)")
            assert cur.fetchone()[0] == 0
            for sql in (
                "SELECT * FROM dash_dim_sessions",
                "SELECT * FROM dash_dim_daily",
                "SELECT dash_dimension_rebuild()",
                "DELETE FROM dash_dim_pending",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    cur.execute(sql)
            with pytest.raises(psycopg2.errors.RaiseException, match="max_rows must be a positive integer"):
                cur.execute("SELECT dash_dimension_refresh(0)")
    finally:
        conn.close()
    reader = dw_db.connect(dw_db.dashboard)
    try:
        with reader.cursor() as cur, pytest.raises(errors.InsufficientPrivilege):
            cur.execute("SELECT * FROM dash_dim_sessions")  # per-session state: not the dashboard's
    finally:
        reader.close()
