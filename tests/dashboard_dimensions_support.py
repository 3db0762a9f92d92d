"""The dimension tabs' oracle (Acquisition, Pages, Technology, Retention; migration V031): a known
event set with page, traffic and user-agent context, loaded through the real ETL's table, and the
figures each dimension block of sql/dashboard.sql must return, computed here in Python from the
events, independently of the SQL. Used by tests/test_dashboard_dimensions.py, the browser test and
the testthat suite (test-dimensions.R). The base oracle (KPIs, funnel, products) is
tests/dashboard_support.py.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg2.extras import execute_values

from tests.dashboard_support import (
    COLUMNS,
    Filters,
    Product,
    _unit_price,
    catalog,
    session_key,
)

DIM_COLUMNS = (
    *COLUMNS,
    "page_path",
    "referrer_host",
    "traffic_source",
    "channel_group",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "ua_browser",
    "ua_os",
    "device_class",
)  # is_bot is in COLUMNS (V022 keys the main cells by it too)
# (referrer_host, traffic_source, channel_group, utm_source, utm_medium, utm_campaign) of a landing.
LANDINGS = (
    ("www.google.com", "google", "Organic Search", None, None, None),
    ("www.google.com", "google", "Paid Search", "google", "cpc", "spring-sale"),
    ("www.facebook.com", "facebook", "Organic Social", None, None, None),
    ("l.facebook.com", "facebook", "Paid Social", "facebook", "paid_social", "spring-sale"),
    (None, "newsletter", "Email", "newsletter", "email", "weekly-42"),
    (None, "(direct)", "Direct", None, None, None),
    ("blog.example.org", "blog.example.org", "Referral", None, None, None),
    (None, None, None, None, None, None),  # a row loaded before V030: every dimension '(not set)'
)
# (browser, os, device_class, is_bot)
AGENTS = (
    ("Chrome", "Windows", "desktop", False),
    ("Safari", "iOS", "mobile", False),
    ("Chrome", "Android", "mobile", False),
    ("Safari", "iPadOS", "tablet", False),
    ("Firefox", "Linux", "desktop", False),
    ("Googlebot", "Other", "bot", True),
)
PAGES = ("/", "/shoes", "/bags", "/watches", "/about", "/cart", "/checkout")
DIMENSIONS = (
    "channel_group",
    "traffic_source",
    "referrer_host",
    "browser",
    "os",
    "device_class",
    "entry_page",
    "exit_page",
)


def make_dimension_events(
    anchor: datetime, seed: int = 17, sessions: int = 160, weeks: int = 6
) -> list[dict]:
    """Sessions over `weeks` weeks before `anchor` with landings (referrer, UTM), user agents (bots
    included), page paths and returning visitors: every V031 figure has something to count.

    Later events of a session are internal navigation ('Internal', '(internal)'), so a per-event
    count would differ from the session's first-event attribution the rollups use.
    """
    rnd = random.Random(seed)
    products = catalog()
    clients = [f"dclient-{i:03d}" for i in range(sessions // 3)]
    events: list[dict] = []
    for n in range(sessions):
        start = anchor - timedelta(days=rnd.uniform(0.01, weeks * 7) ** 1.0)
        client = rnd.choice(clients)
        logged_in = rnd.random() < 0.3
        user_id = f"duser-{client[-3:]}" if logged_in else None
        landing = rnd.choice(LANDINGS)
        agent = AGENTS[5] if rnd.random() < 0.12 else rnd.choice(AGENTS[:5])
        session = f"ds-{n:04d}-{uuid.UUID(int=rnd.getrandbits(128)).hex[:6]}"
        steps: list[tuple[str, str, Product | None]] = []
        if rnd.random() < 0.1:
            steps.append(("search", "/", None))  # the session's first event is not a page_view
        for _ in range(rnd.randint(1, 4)):
            steps.append(("page_view", rnd.choice(PAGES), None))
        product = rnd.choice(products)
        if rnd.random() < 0.6:
            steps.append(("product_view", f"/products/{product.product_id}", product))
            if rnd.random() < 0.5:
                steps.append(("add_to_cart", "/cart", product))
                steps.append(("page_view", "/checkout", None))
                if rnd.random() < 0.6:
                    steps.append(("purchase", "/checkout", product))
        t = start
        for i, (name, path, prod) in enumerate(steps):
            first = i == 0
            ref_host, source, channel, utm_s, utm_m, utm_c = (
                landing if first else (None, "(internal)", "Internal", None, None, None)
            )
            events.append(
                {
                    "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                    "event_timestamp": t,
                    "event_name": name,
                    "user_id": user_id,
                    "user_login_state": "logged_in" if logged_in else "guest",
                    "identity_source": "cognito" if logged_in else "anonymous",
                    "client_id": client,
                    "session_id": session,
                    "is_first_visit": False,
                    "context_product_id": prod.product_id if prod else None,
                    "context_product_name": prod.name if prod else None,
                    "context_product_category": prod.category if prod else None,
                    "context_product_brand": prod.brand if prod else None,
                    "context_product_price": prod.price if prod else None,
                    "context_product_discount_price": prod.discount_price if prod else None,
                    "context_product_url_path": f"/products/{prod.product_id}" if prod else None,
                    "source_key": f"events/{t:%Y/%m/%d}/event-{session}.json",
                    "page_path": path if landing[2] is not None or not first else None,
                    "referrer_host": ref_host,
                    "traffic_source": source,
                    "channel_group": channel,
                    "utm_source": utm_s,
                    "utm_medium": utm_m,
                    "utm_campaign": utm_c,
                    "ua_browser": agent[0],
                    "ua_os": agent[1],
                    "device_class": agent[2],
                    "is_bot": agent[3],
                }
            )
            t += timedelta(seconds=rnd.randint(5, 600))
    return events


def load_dimension_events(conn: Any, events: list[dict], batches: int = 1) -> None:
    """Insert the events with their V030 context in `batches` statements, each followed by both
    refreshes (V005 and V031), as the ETL's runs do."""
    rows = [tuple(e[c] for c in DIM_COLUMNS) for e in events]
    size = -(-len(rows) // batches)
    with conn.cursor() as cur:
        for i in range(0, len(rows), size):
            chunk = rows[i : i + size]
            execute_values(
                cur,
                f"INSERT INTO clickstream_events ({', '.join(DIM_COLUMNS)}) VALUES %s",
                chunk,
                page_size=1000,
            )
            cur.execute("SELECT dash_rollup_refresh(%s)", (len(chunk) + 1,))
            cur.execute("SELECT dash_dimension_refresh(%s)", (len(chunk) + 1,))
            assert cur.fetchone()[0] == len(chunk)


def _bots_ok(e: dict, include_bots: bool) -> bool:
    return include_bots or not e["is_bot"]


def _in_local_period(t: datetime, f: Filters) -> bool:
    return f.date_from <= t.astimezone(ZoneInfo(f.timezone)).date() <= f.date_to


def session_facts(events: list[dict]) -> list[dict]:
    """One dict per session: the attributes of its first event, entry/exit page, purchases."""
    by_session: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in events:
        by_session[session_key(e)].append(e)
    out = []
    for evs in by_session.values():
        evs.sort(key=lambda e: (e["event_timestamp"], e["event_id"]))
        first = evs[0]
        views = [e for e in evs if e["event_name"] == "page_view"]
        purchases = [e for e in evs if e["event_name"] == "purchase"]
        has_utm = any(first[k] is not None for k in ("utm_source", "utm_medium", "utm_campaign"))
        out.append(
            {
                "start": first["event_timestamp"],
                "is_bot": first["is_bot"],
                "channel_group": first["channel_group"] or "(not set)",
                "traffic_source": first["traffic_source"] or "(not set)",
                "referrer_host": first["referrer_host"] or "(not set)",
                "browser": first["ua_browser"] or "(not set)",
                "os": first["ua_os"] or "(not set)",
                "device_class": first["device_class"] or "(not set)",
                "campaign": tuple(
                    first[k] or "(not set)" for k in ("utm_source", "utm_medium", "utm_campaign")
                )
                if has_utm
                else None,
                "entry_page": (views[0]["page_path"] or "(not set)") if views else None,
                "exit_page": (views[-1]["page_path"] or "(not set)") if views else None,
                "converted": bool(purchases),
                "revenue": sum((_unit_price(e) for e in purchases), Decimal(0)),
            }
        )
    return out


def dimension_sessions(events: list[dict], f: Filters, dimension: str, include_bots: bool = False) -> dict:
    """value -> {sessions, conversions, revenue} of the sessions starting in the period."""
    out: dict[Any, dict[str, Any]] = {}
    for s in session_facts(events):
        if (
            not _in_local_period(s["start"], f)
            or not (include_bots or not s["is_bot"])
            or s[dimension] is None
        ):
            continue
        g = out.setdefault(s[dimension], {"sessions": 0, "conversions": 0, "revenue": Decimal(0)})
        g["sessions"] += 1
        g["conversions"] += s["converted"]
        g["revenue"] += s["revenue"]
    return {k: {**v, "revenue": float(v["revenue"])} for k, v in out.items()}


def top_pages(events: list[dict], f: Filters, include_bots: bool = False) -> dict[str, dict[str, int]]:
    """page_path -> {views, sessions, entries, exits}."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"views": 0, "sessions": set(), "entries": 0, "exits": 0}
    )
    for e in events:
        if (
            e["event_name"] == "page_view"
            and _bots_ok(e, include_bots)
            and _in_local_period(e["event_timestamp"], f)
        ):
            g = out[e["page_path"] or "(not set)"]
            g["views"] += 1
            g["sessions"].add(session_key(e))
    for kind, key in (("entry_page", "entries"), ("exit_page", "exits")):
        for page, v in dimension_sessions(events, f, kind, include_bots).items():
            out[page][key] += v["sessions"]
    return {k: {**v, "sessions": len(v["sessions"])} for k, v in out.items()}


def pages_summary(events: list[dict], f: Filters, include_bots: bool = False) -> dict[str, Any]:
    views = sum(p["views"] for p in top_pages(events, f, include_bots).values())
    sessions = sum(
        v["sessions"] for v in dimension_sessions(events, f, "device_class", include_bots).values()
    )
    return {
        "page_views": views,
        "sessions": sessions,
        "views_per_session": round(views / sessions, 2) if sessions else None,
    }


def _utc_day(t: datetime) -> date:
    return t.astimezone(ZoneInfo("UTC")).date()


def _visitor_key(e: dict) -> str:
    """V031's visitor: per event, 'u:' || user_id when it has one, else 'c:' || client_id (V005's users)."""
    return f"u:{e['user_id']}" if e["user_id"] is not None else f"c:{e['client_id']}"


def _visitor(e: dict) -> tuple[str, bool]:
    return (_visitor_key(e), e["is_bot"])


def retention_cohorts(
    events: list[dict], f: Filters, include_bots: bool = False
) -> dict[tuple[str, int], int]:
    """(cohort Monday, week n) -> visitors, for cohorts starting in the period's weeks, n <= 12."""
    weeks: dict[tuple[str, bool], set[date]] = defaultdict(set)
    for e in events:
        if _bots_ok(e, include_bots):
            d = _utc_day(e["event_timestamp"])
            weeks[_visitor(e)].add(d - timedelta(days=d.weekday()))
    first_monday = f.date_from - timedelta(days=f.date_from.weekday())
    out: dict[tuple[str, int], int] = defaultdict(int)
    for active in weeks.values():
        cohort = min(active)
        if not first_monday <= cohort <= f.date_to:
            continue
        for w in active:
            n = (w - cohort).days // 7
            if n <= 12:
                out[(cohort.isoformat(), n)] += 1
    return dict(out)


def daily_visitors(
    events: list[dict], first: date, last: date, include_bots: bool = False
) -> dict[date, set]:
    out: dict[date, set] = defaultdict(set)
    for e in events:
        d = _utc_day(e["event_timestamp"])
        if first <= d <= last and _bots_ok(e, include_bots):
            out[d].add(_visitor_key(e))  # one visitor whether its events are bots' or not (one sketch)
    return out


def active_users(events: list[dict], f: Filters, include_bots: bool = False) -> dict[str, float]:
    days = daily_visitors(events, min(f.date_from, f.date_to - timedelta(days=29)), f.date_to, include_bots)

    def union(since: date) -> set:
        return set().union(*[v for d, v in days.items() if d >= since])

    n_days = (f.date_to - f.date_from).days + 1
    dau = sum(len(v) for d, v in days.items() if d >= f.date_from) / n_days
    mau = len(union(f.date_to - timedelta(days=29)))
    dau_30 = sum(len(v) for d, v in days.items() if d >= f.date_to - timedelta(days=29)) / 30
    return {
        "dau": round(dau, 2),
        "wau": len(union(f.date_to - timedelta(days=6))),
        "mau": mau,
        "stickiness": round(dau_30 / mau, 4) if mau else None,
    }


def run_dashboard_rows(db: Any, name: str, values: dict[str, str]) -> list[dict[str, Any]]:
    """Every row of a dashboard.sql block, run like run_dashboard_query (the dashboard's login)."""
    from benchmarks.bench_dashboard import load_queries, to_psycopg

    sql, names = to_psycopg(load_queries()[name])
    conn = db.connect(db.dashboard)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, [values[n] for n in names])
            cols = [d.name for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def expected_dimension_case(events: list[dict], f: Filters, include_bots: bool) -> dict[str, Any]:
    """Everything tests/testthat/test-dimensions.R checks for one filter combination (JSON-able)."""
    return {
        "filters": {**f.as_r(), "include_bots": "true" if include_bots else "false"},
        "dimensions": {
            d: [{"value": k, **v} for k, v in dimension_sessions(events, f, d, include_bots).items()]
            for d in DIMENSIONS
        },
        "campaigns": [
            {"utm_source": k[0], "utm_medium": k[1], "utm_campaign": k[2], **v}
            for k, v in dimension_sessions(events, f, "campaign", include_bots).items()
        ],
        "pages": [{"page_path": k, **v} for k, v in top_pages(events, f, include_bots).items()],
        "pages_summary": pages_summary(events, f, include_bots),
        "cohorts": [
            {"cohort_week": c, "week_n": n, "visitors": v}
            for (c, n), v in sorted(retention_cohorts(events, f, include_bots).items())
        ],
        "active_users": active_users(events, f, include_bots),
        "daily_visitors": {
            d.isoformat(): len(v)
            for d, v in daily_visitors(events, f.date_from, f.date_to, include_bots).items()
        },
    }
