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

    Like a sandbox host: reachable only by entering the namespace (the SSM endpoint stand-in's data
    channel does, for the port-forward playbook). The database must be given as a unix-socket directory.
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
