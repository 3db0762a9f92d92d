"""One identity rule (issue 15 §5, migration V020) against a real PostgreSQL with the real migrations:
a session is (client_id, session_id), on the dashboard's own SQL (kpis, funnel) through both the
incremental refresh and the rebuilds; a login state that contradicts user_id is refused by ingest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import dashboard_support as ds
from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.ingest_support import apigw_event, call, configure, valid_event

ANCHOR = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _two_clients_one_session_id() -> list[dict[str, Any]]:
    """Two shoppers on two devices whose trackers both chose the session id "s-1" (the contract
    accepts any string): one views, carts and buys, the other only views."""
    events = []
    t = ANCHOR - timedelta(hours=3)
    for client, names in (
        ("client-a", ["product_view", "add_to_cart", "begin_checkout", "purchase"]),
        ("client-b", ["product_view"]),
    ):
        for n, name in enumerate(names):
            event = ds.make_events(ANCHOR, seed=1, sessions=2)[0].copy()
            event.update(
                event_id=f"00000000-0000-4000-8000-{hash((client, n)) & 0xFFFFFFFFFFFF:012x}",
                event_timestamp=t + timedelta(minutes=n),
                event_name=name,
                client_id=client,
                session_id="s-1",
                user_id=None,
                user_login_state="guest",
                identity_source="anonymous",
                is_first_visit=n == 0,
                source_key="events/2026/03/10/event-test.json",
                context_product_id="P-1",
                context_product_name="Lamp",
                context_product_category="home",
                context_product_brand="acme",
                context_product_price=ds.Decimal("20.00"),
                context_product_discount_price=None,
                context_product_url_path="/products/P-1",
            )
            events.append(event)
    return events


@pytest.mark.parametrize("path", ["refresh", "rebuild", "rebuild_by_day"])
def test_two_clients_with_the_same_session_id_are_two_sessions(dw_db: PgDatabase, path: str) -> None:
    events = _two_clients_one_session_id()
    conn = dw_db.connect()
    try:
        ds.load_events(conn, events)  # the incremental refresh, as the ETL runs it
        with conn.cursor() as cur:
            if path == "rebuild":
                cur.execute("SELECT dash_rollup_rebuild()")
            elif path == "rebuild_by_day":
                conn.commit()
                conn.autocommit = True
                cur.execute(
                    "CALL dash_rollup_rebuild_by_day(%s, %s)",
                    (ANCHOR - timedelta(days=1), ANCHOR + timedelta(days=1)),
                )
        conn.commit()
    finally:
        conn.close()
    f = ds.Filters(ANCHOR.date() - timedelta(days=1), ANCHOR.date())
    kpis = ds.run_dashboard_query(dw_db, "kpis", f.as_r())
    assert int(kpis["sessions"]) == 2  # V005 counted one: both sessions were "s-1"
    assert int(kpis["purchase_sessions"]) == 1
    assert float(kpis["conversion_rate"]) == pytest.approx(0.5)
    assert int(kpis["users"]) == 2  # two guests: two clients
    want = ds.kpis(events, f)
    assert {k: float(kpis[k]) for k in want} == pytest.approx(want)
    funnel = ds.run_dashboard_query(dw_db, "funnel", f.as_r())  # first row: product_view
    assert int(funnel["sessions"]) == 2 == ds.funnel(events, f)[0]


@pytest.mark.parametrize(
    ("patch", "pointer"),
    [
        ({"user_id": "u-1", "user_login_state": "guest"}, "/user_login_state"),
        ({"user_id": None, "user_login_state": "logged_in"}, "/user_login_state"),
    ],
)
def test_a_login_state_contradicting_user_id_is_refused(
    s3_bucket: S3Bucket, patch: dict[str, Any], pointer: str
) -> None:
    configure(s3_bucket)
    status, _, body = call(apigw_event(json.dumps({"events": [valid_event(), valid_event(**patch)]})))
    assert status == 200 and body is not None and body["rejected"] == [1]
    (violation,) = body["violations"]
    assert violation["pointer"] == pointer and "derived from user_id" in violation["message"]
    status, _, body = call(apigw_event(json.dumps(valid_event(user_id="u-1", user_login_state=None))))
    assert status == 200
    stored = [json.loads(line) for k in s3_bucket.keys("events/") for line in s3_bucket.read(k).splitlines()]
    (member,) = [e for e in stored if e.get("user_id") == "u-1"]
    assert member["user_login_state"] == "logged_in"  # derived from user_id
