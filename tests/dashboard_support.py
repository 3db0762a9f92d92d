"""A known clickstream data set for the dashboard tests, and an independent Python oracle.

The oracle computes every dashboard figure from the generated events in plain Python, so the
tests compare the app's SQL (``roles/sbw_dashboard/files/app/sql/dashboard.sql``) against a second
implementation instead of against itself. Used by ``tests/test_dashboard_queries.py`` (testthat)
and ``tests/test_dashboard_browser.py`` (numbers on the page).
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from psycopg2.extras import execute_values

from tests.service_support import free_port

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "roles" / "sbw_dashboard" / "files" / "app"
FUNNEL = ("product_view", "add_to_cart", "begin_checkout", "purchase")
CATEGORIES = ("shoes", "bags", "watches")
BRANDS = ("acme", "globex", "initech", "umbrella")
COLUMNS = (
    "event_id",
    "event_timestamp",
    "event_name",
    "user_id",
    "user_login_state",
    "identity_source",
    "client_id",
    "session_id",
    "is_first_visit",
    "context_product_id",
    "context_product_name",
    "context_product_category",
    "context_product_brand",
    "context_product_price",
    "context_product_discount_price",
    "context_product_url_path",
    "source_key",
    "is_bot",
)


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    brand: str
    price: Decimal
    discount_price: Decimal | None


def catalog(seed: int = 11) -> list[Product]:
    """Twelve products across three categories and four brands, some discounted."""
    rnd = random.Random(seed)
    products = []
    for i in range(12):
        price = Decimal(rnd.randint(1000, 20000)) / 100
        discount = (price * Decimal("0.8")).quantize(Decimal("0.01")) if i % 3 == 0 else None
        products.append(
            Product(f"p{i:03d}", f"Product {i}", CATEGORIES[i % 3], BRANDS[i % 4], price, discount)
        )
    return products


def make_events(anchor: datetime, seed: int = 7, sessions: int = 80, spread_days: float = 5.0) -> list[dict]:
    """Sessions of shoppers in the `spread_days` before `anchor` (UTC), plus older ones (20-30 days).

    Funnel drop-offs, logged-in (cognito) and guest shoppers, returning clients, first visits;
    every fifth logged-in session starts as a guest and logs in at its second event (identity
    stitching, V022), and every thirteenth session is a bot's (is_bot: left out by default).
    """
    rnd = random.Random(seed)
    products = catalog()
    events: list[dict] = []
    clients = [f"client-{i:03d}" for i in range(sessions // 2)]
    seen_clients: set[str] = set()
    plans = [(anchor - timedelta(days=rnd.uniform(0.01, spread_days)), "recent") for _ in range(sessions)]
    plans += [(anchor - timedelta(days=rnd.uniform(20, 30)), "old") for _ in range(sessions // 8)]
    plans.sort()
    for n, (start, _) in enumerate(plans):
        client = rnd.choice(clients)
        logged_in = rnd.random() < 0.4
        user_id = f"user-{client[-3:]}" if logged_in else None
        session = f"s-{n:04d}-{uuid.UUID(int=rnd.getrandbits(128)).hex[:8]}"
        first = client not in seen_clients
        seen_clients.add(client)
        t = start
        names: list[tuple[str, Product | None]] = [("page_view", None)]
        product = rnd.choice(products)
        for _ in range(rnd.randint(0, 3)):
            names.append(("product_view", rnd.choice(products)))
        if rnd.random() < 0.8:
            names.append(("product_view", product))
            if rnd.random() < 0.6:
                names.append(("add_to_cart", product))
                if rnd.random() < 0.7:
                    names.append(("begin_checkout", product))
                    if rnd.random() < 0.75:
                        names.append(("purchase", product))
        if rnd.random() < 0.1:
            names.append(("add_to_cart", rnd.choice(products)))  # cart without a view: not in the funnel
        logs_in_late = logged_in and n % 5 == 0  # decided without rnd: the data set stays the same
        for i, (name, prod) in enumerate(names):
            member = logged_in and not (logs_in_late and i == 0)
            events.append(
                {
                    "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                    "event_timestamp": t,
                    "event_name": name,
                    "user_id": user_id if member else None,
                    "user_login_state": "logged_in" if member else "guest",
                    "identity_source": "cognito" if member else "anonymous",
                    "client_id": client,
                    "session_id": session,
                    "is_first_visit": first and i == 0,
                    "context_product_id": prod.product_id if prod else None,
                    "context_product_name": prod.name if prod else None,
                    "context_product_category": prod.category if prod else None,
                    "context_product_brand": prod.brand if prod else None,
                    "context_product_price": prod.price if prod else None,
                    "context_product_discount_price": prod.discount_price if prod else None,
                    "context_product_url_path": f"/products/{prod.product_id}" if prod else None,
                    "source_key": f"events/{t:%Y/%m/%d}/event-{session}.json",
                    "is_bot": n % 13 == 5,
                }
            )
            t += timedelta(seconds=rnd.randint(5, 90))
    return events


def load_events(conn: Any, events: list[dict]) -> None:
    """Insert the events (as the superuser connection given) and fold them into the dashboard's
    rollups, as the ETL does at the end of a run (migration V005)."""
    rows = [tuple(e[c] for c in COLUMNS) for e in events]
    with conn.cursor() as cur:
        execute_values(
            cur, f"INSERT INTO clickstream_events ({', '.join(COLUMNS)}) VALUES %s", rows, page_size=1000
        )
        cur.execute("SELECT dash_rollup_refresh(%s)", (len(rows) + 1,))
        assert cur.fetchone()[0] == len(rows)


# ---------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Filters:
    date_from: date
    date_to: date
    timezone: str = "UTC"
    category: str = ""
    brand: str = ""
    event_name: str = ""
    include_bots: bool = False

    def as_r(self) -> dict[str, str]:
        return {
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "timezone": self.timezone,
            "category": self.category,
            "brand": self.brand,
            "event_name": self.event_name,
            "include_bots": "true" if self.include_bots else "false",
        }


def in_period(e: dict, f: Filters) -> bool:
    local = e["event_timestamp"].astimezone(ZoneInfo(f.timezone)).date()
    return f.date_from <= local <= f.date_to


def select(events: list[dict], f: Filters, use_event_name: bool = True) -> list[dict]:
    return [
        e
        for e in events
        if in_period(e, f)
        and (f.include_bots or not e.get("is_bot", False))
        and (not f.category or e["context_product_category"] == f.category)
        and (not f.brand or e["context_product_brand"] == f.brand)
        and (not use_event_name or not f.event_name or e["event_name"] == f.event_name)
    ]


def _unit_price(e: dict) -> Decimal:
    d = e["context_product_discount_price"]
    return d if d is not None else e["context_product_price"]


def session_key(e: dict) -> tuple[str, str]:
    """A session is (client_id, session_id): the identity rule of V020 (issue 15)."""
    return (e["client_id"], e["session_id"])


def session_users(events: list[dict]) -> dict[tuple[str, str], str]:
    """Identity stitching (V022): a session with a user_id belongs to the user of its earliest event
    that has one (ties: the smallest user_id), whichever events a period or filter selects."""
    first: dict[tuple[str, str], tuple[datetime, str]] = {}
    for e in events:
        if e["user_id"] is not None:
            key, mark = session_key(e), (e["event_timestamp"], e["user_id"])
            first[key] = min(first.get(key, mark), mark)
    return {key: mark[1] for key, mark in first.items()}


def person(e: dict, links: dict[tuple[str, str], str]) -> str | None:
    """The user an event belongs to: its own user_id, else its session's; None = a guest's."""
    return e["user_id"] if e["user_id"] is not None else links.get(session_key(e))


def kpis(events: list[dict], f: Filters) -> dict[str, float]:
    rows = select(events, f)
    links = session_users(events)
    sessions = {session_key(e) for e in rows}
    purchase_sessions = {session_key(e) for e in rows if e["event_name"] == "purchase"}
    users = {person(e, links) for e in rows} - {None}
    guests = {e["client_id"] for e in rows if person(e, links) is None}
    return {
        "events": len(rows),
        "sessions": len(sessions),
        "users": len(users) + len(guests),  # a user is one user, a guest is one client
        "logged_in_users": len(users),
        "guest_visitors": len(guests),
        "first_visits": len({e["client_id"] for e in rows if e["is_first_visit"]}),
        "product_views": sum(e["event_name"] == "product_view" for e in rows),
        "add_to_carts": sum(e["event_name"] == "add_to_cart" for e in rows),
        "purchases": sum(e["event_name"] == "purchase" for e in rows),
        "purchase_sessions": len(purchase_sessions),
        "revenue": float(sum((_unit_price(e) for e in rows if e["event_name"] == "purchase"), Decimal(0))),
        "conversion_rate": round(len(purchase_sessions) / len(sessions), 4) if sessions else 0.0,
    }


def funnel(events: list[dict], f: Filters) -> list[int]:
    """Sessions per step: a step-k event in the period (and category/brand) counts when its session
    reached step k-1 at or before it, in time order, with any product at any time."""
    reached: dict[tuple[str, str], list[datetime | None]] = defaultdict(lambda: [None] * len(FUNNEL))
    for e in sorted(events, key=lambda e: e["event_timestamp"]):
        if e["event_name"] not in FUNNEL:
            continue
        k = FUNNEL.index(e["event_name"])
        steps = reached[session_key(e)]
        if steps[k] is None and (k == 0 or steps[k - 1] is not None):
            steps[k] = e["event_timestamp"]
    counted: list[set[tuple[str, str]]] = [set() for _ in FUNNEL]
    for e in select(events, f, use_event_name=False):
        if e["event_name"] not in FUNNEL:
            continue
        k = FUNNEL.index(e["event_name"])
        before = reached[session_key(e)][k - 1] if k else e["event_timestamp"]
        if before is not None and e["event_timestamp"] >= before:
            counted[k].add(session_key(e))
    return [len(sessions) for sessions in counted]


def top(events: list[dict], f: Filters, key: str, order_by: str, limit: int) -> list[dict]:
    if f.event_name and f.event_name not in FUNNEL:
        return []  # the top lists rank commerce events only
    groups: dict[str, dict[str, Any]] = {}
    for e in select(events, f):
        k = e[key]
        if k is None:
            continue
        g = groups.setdefault(
            k, {"key": k, "views": 0, "add_to_carts": 0, "purchases": 0, "revenue": Decimal(0)}
        )
        if e["event_name"] == "product_view":
            g["views"] += 1
        elif e["event_name"] == "add_to_cart":
            g["add_to_carts"] += 1
        elif e["event_name"] == "purchase":
            g["purchases"] += 1
            g["revenue"] += _unit_price(e)
    ordered = sorted(groups.values(), key=lambda g: (-g[order_by], g["key"]))[:limit]
    return [{**g, "revenue": float(g["revenue"])} for g in ordered]


def identity(events: list[dict], f: Filters) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for e in select(events, f):
        out[f"{e['user_login_state']}/{e['identity_source']}"] += 1
    return dict(out)


def new_vs_returning(events: list[dict], f: Filters) -> dict[str, int]:
    clients: dict[str, bool] = {}
    for e in select(events, f):
        clients[e["client_id"]] = clients.get(e["client_id"], False) or bool(e["is_first_visit"])
    return {
        "new": sum(clients.values()),
        "returning": sum(not v for v in clients.values()),
    }


def events_per_day(events: list[dict], f: Filters) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for e in select(events, f):
        out[e["event_timestamp"].astimezone(ZoneInfo(f.timezone)).strftime("%Y-%m-%d")] += 1
    return dict(out)


def expected_case(events: list[dict], f: Filters) -> dict[str, Any]:
    """Everything the testthat suite checks for one filter combination."""
    return {
        "filters": f.as_r(),
        "kpis": kpis(events, f),
        "funnel": funnel(events, f),
        "top_products_views": top(events, f, "context_product_id", "views", 5),
        "top_categories_revenue": top(events, f, "context_product_category", "revenue", 10),
        "top_brands_purchases": top(events, f, "context_product_brand", "purchases", 10),
        "identity": identity(events, f),
        "new_vs_returning": new_vs_returning(events, f),
        "events_per_day": events_per_day(events, f),
    }


# ---------------------------------------------------------------- running the app


def run_dashboard_query(db: Any, name: str, values: dict[str, str]) -> dict[str, Any]:
    """The first row of a dashboard.sql block, run from Python as the dashboard's login (the very
    text the app and the benchmark run); `db` is a tests.fixtures.postgres.PgDatabase."""
    from benchmarks.bench_dashboard import load_queries, to_psycopg

    sql, names = to_psycopg(load_queries()[name])
    conn = db.connect(db.dashboard)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, [values[n] for n in names])
            return dict(zip([d.name for d in cur.description], cur.fetchone(), strict=True))
    finally:
        conn.close()


def end_forwarders(run_dir: Path) -> None:
    """Teardown after a failed test: end the port forwards recorded in `run_dir` (playbooks/
    port_forward.yml's PID files; each forwarder leads its own process group)."""
    for pid_file in run_dir.glob("*.pid") if run_dir.exists() else []:
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text().strip()), signal.SIGTERM)


def write_db_config(path: Path, host: str, port: int, dbname: str, user: str, password: str) -> Path:
    """The credentials file the app reads (same format the sbw_dashboard role writes)."""
    path.write_text(
        f"host: {host}\nport: {port}\ndbname: {dbname}\nuser: {user}\npassword: {password}\n",
        encoding="utf-8",
    )
    path.chmod(0o400)
    return path


def _shiny_command(port: int) -> list[str]:
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript is missing: apt-get install r-base-core (listed in .ci/apt-packages.txt)"
    code = f"shiny::runApp('{APP_DIR}', host = '127.0.0.1', port = {port}L, launch.browser = FALSE)"
    return [rscript, "-e", code]


def _shiny_env(db_config: Path, home: Path) -> dict[str, str]:
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    return {"PATH": path, "HOME": str(home), "TZ": "UTC", "SBW_DASHBOARD_DB_CONFIG": str(db_config)}


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, probe_prefix: list[str]) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Shiny app exited: {log.read_text(errors='replace')[-3000:]}")
        cmd = [*probe_prefix, "python3", "-c", probe]
        if subprocess.run(cmd, stderr=subprocess.DEVNULL, check=False).returncode == 0:
            return
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the Shiny app did not listen on {port}: {log.read_text(errors='replace')[-3000:]}")


def start_shiny(db_config: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """The app in a plain R process on the controller's 127.0.0.1:<free port>; waits until it listens."""
    port = free_port()
    handle = log.open("wb")
    proc = subprocess.Popen(
        _shiny_command(port), stdout=handle, stderr=subprocess.STDOUT, env=_shiny_env(db_config, log.parent)
    )
    _wait_listening(proc, port, log, [])
    return proc, port


def start_shiny_in_netns(db_config: Path, log: Path, port: int = 3838) -> subprocess.Popen:
    """The app in its own network namespace (unshare -n), on that namespace's 127.0.0.1:`port`.

    Like a sandbox host: reachable only by entering the namespace (the port-forward playbook's
    sandbox backend does). The database must be given as a unix-socket directory (no network).
    """
    inner = " ".join(shlex.quote(a) for a in _shiny_command(port))
    handle = log.open("wb")
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=_shiny_env(db_config, log.parent),
    )
    _wait_listening(proc, port, log, ["nsenter", "-t", str(proc.pid), "-n"])
    return proc


# ---------------------------------------------------------------- dimension tabs (V031)

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
