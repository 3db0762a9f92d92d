"""Identity stitching and bots (migration V022) on a real PostgreSQL with the real migrations, read
through the dashboard's own SQL blocks: a guest who logs in mid-session is one user, one user on two
devices is one user, a login that arrives in a later ETL run relinks the session's earlier events
(refresh = oracle = full rebuild = rebuild by day), the relink window is what the docs say, and bot
events are out of the KPIs unless include_bots is asked for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from psycopg2 import errors

from tests import dashboard_support as ds
from tests.fixtures.postgres import PgDatabase
from tests.test_dashboard_rollups import _insert_as_writer, _snapshot

ANCHOR = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PERIOD = ds.Filters(ANCHOR.date() - timedelta(days=3), ANCHOR.date())


def _event(name: str, at: datetime, client: str, session: str, user: str | None = None, **kw: Any) -> dict:
    product = name != "page_view"
    return {
        "event_id": str(uuid.uuid4()),
        "event_timestamp": at,
        "event_name": name,
        "user_id": user,
        "user_login_state": "logged_in" if user else "guest",
        "identity_source": "cognito" if user else "anonymous",
        "client_id": client,
        "session_id": session,
        "is_first_visit": False,
        "context_product_id": "P-1" if product else None,
        "context_product_name": "Lamp" if product else None,
        "context_product_category": "home" if product else None,
        "context_product_brand": "acme" if product else None,
        "context_product_price": Decimal("20.00") if product else None,
        "context_product_discount_price": None,
        "context_product_url_path": "/products/P-1" if product else None,
        "source_key": "events/2026/03/10/event-test.json",
        "is_bot": False,
        **kw,
    }


def _guest_then_login(t: datetime, client: str = "client-a", user: str = "u-1") -> list[dict]:
    """A guest views and carts, logs in, checks out and buys: one shopper."""
    return [
        _event("page_view", t, client, "s-1", is_first_visit=True),
        _event("product_view", t + timedelta(minutes=1), client, "s-1"),
        _event("add_to_cart", t + timedelta(minutes=2), client, "s-1"),
        _event("begin_checkout", t + timedelta(minutes=3), client, "s-1", user),
        _event("purchase", t + timedelta(minutes=4), client, "s-1", user),
    ]


def _kpis(db: PgDatabase, f: ds.Filters = PERIOD) -> dict[str, float]:
    row = ds.run_dashboard_query(db, "kpis", f.as_r())
    return {k: float(v) for k, v in row.items() if k != "estimated"}


def _assert_oracle(db: PgDatabase, events: list[dict], f: ds.Filters = PERIOD) -> dict[str, float]:
    got = _kpis(db, f)
    want = ds.kpis(events, f)
    assert {k: got[k] for k in want} == pytest.approx(want)
    return got


def _rebuild(db: PgDatabase, path: str) -> None:
    if path == "rebuild":
        db.query("SELECT dash_rollup_rebuild()")
    elif path == "rebuild_by_day":
        conn = db.connect()  # autocommit: the procedure commits per day
        try:
            with conn.cursor() as cur:
                cur.execute("CALL dash_rollup_rebuild_by_day()")
        finally:
            conn.close()


@pytest.mark.parametrize("path", ["refresh", "rebuild", "rebuild_by_day"])
def test_a_guest_who_logs_in_mid_session_is_one_user(dw_db: PgDatabase, path: str) -> None:
    events = _guest_then_login(ANCHOR - timedelta(hours=5))
    _insert_as_writer(dw_db, events)
    _rebuild(dw_db, path)
    got = _assert_oracle(dw_db, events)
    # V020 counted two: the guest client (before the login) and the user (after it).
    assert (got["users"], got["logged_in_users"], got["guest_visitors"], got["sessions"]) == (1, 1, 0, 1)
    # The guest part alone (cart events only) is the user's too.
    carts = ds.Filters(PERIOD.date_from, PERIOD.date_to, event_name="add_to_cart")
    assert (_kpis(dw_db, carts)["users"], _kpis(dw_db, carts)["guest_visitors"]) == (1, 0)
    assert ds.kpis(events, carts)["logged_in_users"] == 1


def test_one_user_on_two_devices_is_one_user_and_a_guest_stays_a_client(dw_db: PgDatabase) -> None:
    t = ANCHOR - timedelta(hours=8)
    events = [
        *_guest_then_login(t, "phone"),
        _event("page_view", t + timedelta(hours=2), "laptop", "s-9", "u-1"),
        _event("product_view", t + timedelta(hours=2, minutes=1), "laptop", "s-9", "u-1"),
        # The phone again, later, never logged in: that session belongs to the phone (a client).
        _event("page_view", t + timedelta(hours=4), "phone", "s-2"),
    ]
    _insert_as_writer(dw_db, events)
    got = _assert_oracle(dw_db, events)
    assert (got["users"], got["logged_in_users"], got["guest_visitors"], got["sessions"]) == (2, 1, 1, 3)
    logins = ds.Filters(PERIOD.date_from, PERIOD.date_to, event_name="product_view")
    assert _assert_oracle(dw_db, events, logins)["users"] == 1  # phone (stitched) and laptop: u-1


def test_a_login_in_a_later_etl_run_relinks_the_earlier_events_once(dw_db: PgDatabase) -> None:
    # A data set where every fifth logged-in session starts as a guest; their guest events arrive in
    # the first ETL run, everything else (the logins) in the second.
    events = ds.make_events(ANCHOR, seed=21, sessions=160)
    sessions_with_login = {ds.session_key(e) for e in events if e["user_id"] is not None}
    early = [e for e in events if e["user_id"] is None and ds.session_key(e) in sessions_with_login]
    late = [e for e in events if e not in early]
    assert early and late
    f = ds.Filters(ANCHOR.date() - timedelta(days=6), ANCHOR.date())

    _insert_as_writer(dw_db, early)
    first = _assert_oracle(dw_db, early, f)  # run 1 knows no login yet: those guests are clients
    assert first["guest_visitors"] == first["users"] > 0 == first["logged_in_users"]

    _insert_as_writer(dw_db, late, refresh_rows=37)  # several refreshes: the logins come in pieces
    while dw_db.query("SELECT count(*) FROM dash_pending")[0][0]:
        dw_db.query("SELECT dash_rollup_refresh(37)")
    after = _assert_oracle(dw_db, events, f)
    # V020's rule (user_id, else client, per event) would count the stitched guests a second time.
    per_event = {f"u:{e['user_id']}" if e["user_id"] else f"c:{e['client_id']}" for e in ds.select(events, f)}
    assert after["users"] < len(per_event)
    _assert_oracle(dw_db, events, ds.Filters(f.date_from, f.date_to, "Asia/Singapore", category="shoes"))

    refreshed = _snapshot(dw_db)
    _rebuild(dw_db, "rebuild")
    assert _snapshot(dw_db) == refreshed
    _rebuild(dw_db, "rebuild_by_day")
    assert _snapshot(dw_db) == refreshed
    assert dw_db.query("SELECT dash_rollup_refresh(100000)")[0][0] == 0  # nothing counted twice


def test_the_relink_window_is_24_hours_and_a_rebuild_stitches_beyond_it(dw_db: PgDatabase) -> None:
    login = ANCHOR - timedelta(hours=2)
    old_guest = _event("product_view", login - timedelta(hours=30), "client-a", "s-1")
    recent_guest = _event("add_to_cart", login - timedelta(hours=3), "client-a", "s-1")
    logged_in = _event("purchase", login, "client-a", "s-1", "u-1")
    events = [old_guest, recent_guest, logged_in]
    _insert_as_writer(dw_db, [old_guest, recent_guest])
    _insert_as_writer(dw_db, [logged_in])
    # The refresh relinked the event 3 h before the login, not the one 30 h before it.
    got = _kpis(dw_db)
    assert (got["users"], got["logged_in_users"], got["guest_visitors"]) == (2, 1, 1)
    carts = ds.Filters(PERIOD.date_from, PERIOD.date_to, event_name="add_to_cart")
    assert (_kpis(dw_db, carts)["logged_in_users"], _kpis(dw_db, carts)["guest_visitors"]) == (1, 0)
    _rebuild(dw_db, "rebuild_by_day")  # the documented tool beyond the window
    got = _assert_oracle(dw_db, events)
    assert (got["users"], got["logged_in_users"], got["guest_visitors"]) == (1, 1, 0)


def test_links_are_closed_to_the_etl_and_forgotten_by_an_erasure(dw_db: PgDatabase) -> None:
    events = _guest_then_login(ANCHOR - timedelta(hours=5))
    _insert_as_writer(dw_db, events)
    assert dw_db.query("SELECT user_id FROM dash_session_users") == [("u-1",)]
    writer = dw_db.connect(dw_db.etl)
    try:
        with pytest.raises(errors.InsufficientPrivilege), writer.cursor() as cur:
            cur.execute("SELECT count(*) FROM dash_session_users")
    finally:
        writer.close()
    conn = dw_db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM dw_erase_subject('user_id', 'u-1')")
        conn.commit()
    finally:
        conn.close()
    assert dw_db.query("SELECT count(*) FROM dash_session_users") == [(0,)]
    remaining = [e for e in events if e["user_id"] is None]
    got = _assert_oracle(dw_db, remaining)  # the guest events left are the client's again
    assert (got["users"], got["logged_in_users"], got["guest_visitors"]) == (1, 0, 1)


def test_bot_events_are_out_of_the_kpis_unless_asked_for(dw_db: PgDatabase) -> None:
    t = ANCHOR - timedelta(hours=6)
    shopper = _guest_then_login(t)
    bot = [
        _event(name, t + timedelta(minutes=n), "crawler", "b-1", is_bot=True)
        for n, name in enumerate(["page_view", "product_view", "add_to_cart", "begin_checkout", "purchase"])
    ]
    events = shopper + bot
    _insert_as_writer(dw_db, events)
    with_bots = ds.Filters(PERIOD.date_from, PERIOD.date_to, include_bots=True)
    default = _assert_oracle(dw_db, events)
    assert (default["events"], default["sessions"], default["users"], default["purchases"]) == (5, 1, 1, 1)
    counted = _assert_oracle(dw_db, events, with_bots)
    assert (counted["events"], counted["sessions"], counted["users"], counted["purchases"]) == (10, 2, 2, 2)
    assert ds.run_dashboard_query(dw_db, "funnel", PERIOD.as_r())["sessions"] == 1  # product_view step
    assert ds.run_dashboard_query(dw_db, "funnel", with_bots.as_r())["sessions"] == 2
    top = {**PERIOD.as_r(), "order_by": "purchases", "row_limit": "5"}
    assert ds.run_dashboard_query(dw_db, "top_products", top)["purchases"] == 1
    assert ds.run_dashboard_query(dw_db, "top_products", {**top, "include_bots": "true"})["purchases"] == 2
    hourly = {**PERIOD.as_r(), "event_name": "purchase", "granularity": "day"}
    assert ds.run_dashboard_query(dw_db, "events_over_time", hourly)["events"] == 1
    assert (
        ds.run_dashboard_query(dw_db, "events_over_time", {**hourly, "include_bots": "true"})["events"] == 2
    )
