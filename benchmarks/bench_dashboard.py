"""Dashboard queries at warehouse scale: p50/p95 of every query of the sbw_dashboard app.

Loads N synthetic events (default 10 million, ``SBW_BENCH_DASHBOARD_EVENTS`` to change) with
``COPY`` into a throw-away PostgreSQL 15 with the real warehouse migrations, builds the rollups
the dashboard reads (migration V005, ``dash_rollup_rebuild()``), then times each
query of ``roles/sbw_dashboard/files/app/sql/dashboard.sql`` (the very text the app runs, as the
dashboard's read-only login) for a 7-day and a 90-day window, and prints p50/p95 as a ratio to a
``count(*)`` over the same window measured in the same run. Goal from the issue: p95 < 300 ms at
10 M events (printed for orientation; the ratio is the portable figure). Last, the same queries'
p95 while the rollups of the last 14 days are rebuilt by day (V008), / their p95 at rest.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SQL_FILE = REPO / "roles" / "sbw_dashboard" / "files" / "app" / "sql" / "dashboard.sql"
INDEX_FILE = REPO / "roles" / "dw_schema" / "files" / "migrations" / "V003__events_indexes.sql"
BLOCK = re.compile(r"^-- name: (?P<name>\S+)\s*$", re.M)
PARAMS = re.compile(r"^-- params:(?P<params>.*)$", re.M)
EVENTS = int(os.environ.get("SBW_BENCH_DASHBOARD_EVENTS", "10000000"))
HISTORY_DAYS = 120
CHUNK = 200_000
REBUILD_DAYS = 14  # the window rebuilt by day while the dashboard is timed (V008)


def load_queries(path: Path = SQL_FILE) -> dict[str, tuple[str, list[str]]]:
    """The app's SQL blocks: name -> (statement with $n placeholders, parameter names in order)."""
    text = path.read_text(encoding="utf-8")
    starts = list(BLOCK.finditer(text))
    queries = {}
    for i, match in enumerate(starts):
        body = text[match.start() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        params_match = PARAMS.search(body)
        params = params_match["params"].split() if params_match else []
        sql = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
        queries[match["name"]] = (sql.strip().rstrip(";"), params)
    return queries


def to_psycopg(query: tuple[str, list[str]]) -> tuple[str, list[str]]:
    """$n placeholders -> psycopg2's %s (each $n used once per position), with the value names in order."""
    sql, names = query
    order: list[str] = []

    def repl(match: re.Match[str]) -> str:
        order.append(names[int(match[1]) - 1])
        return "%s"

    return re.sub(r"\$(\d+)", repl, sql.replace("%", "%%")), order


def _rows(n: int, start_id: int, now: float, rnd: random.Random) -> io.StringIO:
    """`n` events as COPY text: sessions of 1-8 events spread over HISTORY_DAYS before `now`.

    Event ids are sequential (time-ordered like the UUIDv7 keys of ingest); strings are built from
    cached per-day parts so that generation is not the bottleneck.
    """
    names = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase", "search")
    products = [
        f"p{p}\tProduct {p}\tcat{p % 20:02d}\tbrand{p % 60:02d}\t{5 + p % 300}.00\t"
        + (f"{(5 + p % 300) * 0.9:.2f}" if p % 4 == 0 else "\\N")
        + f"\t/p/{p}"
        for p in range(2000)
    ]
    # V030 context: (referrer_host, traffic_source, channel_group, utm_source, utm_medium, utm_campaign)
    # of the landing, later events internal; (browser, os, device_class, is_bot); 300 page paths.
    landings = [
        "www.google.com\tgoogle\tOrganic Search\t\\N\t\\N\t\\N",
        "www.google.com\tgoogle\tPaid Search\tgoogle\tcpc\tspring",
        "www.facebook.com\tfacebook\tOrganic Social\t\\N\t\\N\t\\N",
        "\\N\tnewsletter\tEmail\tnewsletter\temail\tweekly",
        "\\N\t(direct)\tDirect\t\\N\t\\N\t\\N",
        *[f"blog{i}.example.org\tblog{i}.example.org\tReferral\t\\N\t\\N\t\\N" for i in range(20)],
        *[f"\\N\tpartner{i}\tCampaign\tpartner{i}\taffiliate\tcampaign{i}" for i in range(20)],
    ]
    internal = "\\N\t(internal)\tInternal\t\\N\t\\N\t\\N"
    agents = [
        "Chrome\tWindows\tdesktop\tf",
        "Safari\tiOS\tmobile\tf",
        "Chrome\tAndroid\tmobile\tf",
        "Safari\tiPadOS\ttablet\tf",
        "Firefox\tLinux\tdesktop\tf",
        "Edge\tWindows\tdesktop\tf",
        "Safari\tmacOS\tdesktop\tf",
        "Googlebot\tOther\tbot\tt",
    ]
    paths = [f"/c/{p % 20}/{p}" for p in range(300)]
    days: dict[int, tuple[str, str]] = {}
    out = io.StringIO()
    written = 0
    span = HISTORY_DAYS * 86400
    clients = max(1, n // 20)
    while written < n:
        session = f"s{rnd.getrandbits(64):016x}"
        client = f"c{rnd.randrange(clients)}"
        logged = rnd.random() < 0.35
        who = f"u{client[1:]}\tlogged_in\tcognito" if logged else "\\N\tguest\tanonymous"
        t = int(now - rnd.random() * span)
        first = "t" if rnd.random() < 0.3 else "f"
        landing = landings[rnd.randrange(len(landings))]
        agent = agents[rnd.randrange(len(agents))]
        for step in range(min(rnd.randint(1, 8), n - written)):
            name = names[step] if step < 5 and rnd.random() < 0.8 else names[rnd.randrange(6)]
            day, sec = divmod(t, 86400)
            if day not in days:
                d = datetime.fromtimestamp(day * 86400, UTC)
                days[day] = (d.strftime("%Y-%m-%d"), d.strftime("events/%Y/%m/%d/event-"))
            date_s, key = days[day]
            eid = start_id + written
            clock = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}+00"
            out.write(
                f"00000000-0000-7000-8000-{eid:012x}\t{date_s} {clock}"
                f"\t{name}\t{who}\t{client}\t{session}\t{first if step == 0 else 'f'}\t"
                f"{products[rnd.randrange(2000)]}\t{key}{session}.json"
                f"\t{paths[rnd.randrange(300)]}\t{landing if step == 0 else internal}\t{agent}\n"
            )
            t += rnd.randint(5, 120)
            written += 1
    out.seek(0)
    return out


INDEX_NAME = re.compile(r"CREATE INDEX (\w+)", re.I)
ROLLUP_TABLES = ("dash_hourly", "dash_daily", "dash_product_hourly", "dash_product_daily")
DIMENSION_TABLES = (
    "dash_dim_hourly",
    "dash_dim_daily",
    "dash_page_hourly",
    "dash_page_daily",
    "dash_visitor_daily",
    "dash_visitor_weeks",
    "dash_retention",
    "dash_dim_sessions",
)
# dimension_sessions is timed once per dimension a tab shows (V031).
DIMENSIONS = (
    "channel_group",
    "traffic_source",
    "referrer_host",
    "campaign",
    "browser",
    "os",
    "device_class",
    "entry_page",
    "exit_page",
)


def load(conn: Any, n: int) -> tuple[float, float]:
    """COPY `n` synthetic events in chunks, then build the dashboard rollups (V005) in one pass.

    The bulk load runs without the secondary indexes of V003 and with the rollup trigger disabled
    (the documented way to bulk-load: dash_rollup_rebuild() afterwards). Returns (COPY rows/s
    including the index build, rollup rebuild seconds).
    """
    rnd = random.Random(42)
    now = time.time()
    cols = (
        "event_id, event_timestamp, event_name, user_id, user_login_state, identity_source, client_id, "
        "session_id, is_first_visit, context_product_id, context_product_name, context_product_category, "
        "context_product_brand, context_product_price, context_product_discount_price, "
        "context_product_url_path, source_key, page_path, referrer_host, traffic_source, channel_group, "
        "utm_source, utm_medium, utm_campaign, ua_browser, ua_os, device_class, is_bot"
    )
    index_sql = INDEX_FILE.read_text(encoding="utf-8")
    started = time.perf_counter()
    done = 0
    with conn.cursor() as cur:
        for name in INDEX_NAME.findall(index_sql):
            cur.execute(f"DROP INDEX IF EXISTS {name}")
        cur.execute("ALTER TABLE clickstream_events DISABLE TRIGGER dash_rollup")
        cur.execute("ALTER TABLE clickstream_events DISABLE TRIGGER dash_dim_enqueue")
        conn.commit()
        while done < n:
            size = min(CHUNK, n - done)
            cur.copy_expert(f"COPY clickstream_events ({cols}) FROM STDIN", _rows(size, done, now, rnd))
            conn.commit()
            done += size
            print(f"   loaded {done:,}/{n:,}", file=sys.stderr, flush=True)
        cur.execute(index_sql)
        conn.commit()
        rate = n / (time.perf_counter() - started)
        rebuild_started = time.perf_counter()
        cur.execute("SELECT dash_rollup_rebuild()")
        cur.execute("ALTER TABLE clickstream_events ENABLE TRIGGER dash_rollup")
        conn.commit()
        rebuild = time.perf_counter() - rebuild_started
        dim_started = time.perf_counter()
        cur.execute("SELECT dash_dimension_rebuild()")
        cur.execute("ALTER TABLE clickstream_events ENABLE TRIGGER dash_dim_enqueue")
        conn.commit()
        dim_rebuild = time.perf_counter() - dim_started
        conn.autocommit = True
        for table in ("clickstream_events", *ROLLUP_TABLES, *DIMENSION_TABLES):
            cur.execute(f"VACUUM ANALYZE {table}")
    return rate, rebuild, dim_rebuild


def rollup_sizes(conn: Any, n: int) -> None:
    """Each rollup's size (table + indexes + TOAST) per million events, and the events' own."""
    per_million = max(n, 1) / 1e6
    print(f"dashboard: rollup size per million events ({n:,} events loaded)")
    with conn.cursor() as cur:
        total = {"V005": 0, "V031": 0}
        for table in ("clickstream_events", *ROLLUP_TABLES, *DIMENSION_TABLES):
            cur.execute(
                "SELECT pg_total_relation_size(%s::regclass), (SELECT count(*) FROM " + table + ")", (table,)
            )
            size, rows = cur.fetchone()
            if table == "clickstream_events":
                size = total_events_size(cur)  # a partitioned table's own size is 0: sum its partitions
            if table in ROLLUP_TABLES:
                total["V005"] += size
            elif table in DIMENSION_TABLES:
                total["V031"] += size
            print(
                f"   {table:<20} {size / per_million / 2**20:10.1f} MiB/M events  "
                f"{rows / per_million:12,.0f} rows/M events"
            )
        events_size = total_events_size(cur)
        for name, size in total.items():
            print(
                f"   rollups {name:<12} {size / per_million / 2**20:10.1f} MiB/M events "
                f"= {size / events_size:.3f} x the events table"
            )


def total_events_size(cur: Any) -> int:
    """The events' size: all partitions of clickstream_events with their indexes."""
    cur.execute(
        "SELECT pg_total_relation_size(inhrelid) FROM pg_inherits "
        "WHERE inhparent = 'clickstream_events'::regclass"
    )
    return sum(r[0] for r in cur.fetchall()) or 1


def _time(cur: Any, sql: str, values: list[str], reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        cur.execute(sql, values)
        cur.fetchall()
        samples.append(time.perf_counter() - t0)
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _args(days: int) -> dict[str, str]:
    """The dashboard's inputs for a window of `days` ending today (UTC), all categories and brands."""
    today = date.today()
    return {
        "date_from": (today - timedelta(days=days - 1)).isoformat(),
        "date_to": today.isoformat(),
        "timezone": "UTC",
        "category": "",
        "brand": "",
        "event_name": "",
        "granularity": "day" if days > 7 else "hour",
        "order_by": "views",
        "row_limit": "10",
        "include_bots": "false",
        "dimension": "channel_group",
    }


def timed_queries() -> list[tuple[str, tuple[str, list[str]], dict[str, str]]]:
    """(label, query, extra arguments): every block once, dimension_sessions once per dimension."""
    out = []
    for name, query in load_queries().items():
        if name == "dimension_sessions":
            out.extend((f"{name}[{d}]", query, {"dimension": d}) for d in DIMENSIONS)
        else:
            out.append((name, query, {}))
    return out


def measure(reader: Any, days: int, reps: int) -> list[tuple[str, float, float, float, float]]:
    """(query, p50 ms, p95 ms, p50 ratio, p95 ratio) for a window of `days` ending today (UTC)."""
    args = _args(days)
    baseline_sql = (
        "SELECT count(*) FROM clickstream_events "
        "WHERE event_timestamp >= (%s::date)::timestamp AT TIME ZONE %s "
        "AND event_timestamp < (%s::date + 1)::timestamp AT TIME ZONE %s"
    )
    baseline_args = [args["date_from"], "UTC", args["date_to"], "UTC"]
    results = []
    with reader.cursor() as cur:
        _time(cur, baseline_sql, baseline_args, 1)  # warm the cache
        base = _time(cur, baseline_sql, baseline_args, reps)
        b50, b95 = _p(base, 0.5), _p(base, 0.95)
        results.append(("count(*) baseline", b50 * 1e3, b95 * 1e3, 1.0, 1.0))
        for name, query, extra in timed_queries():
            sql, names = to_psycopg(query)
            values = {**args, **extra}
            samples = _time(cur, sql, [values[n] for n in names], reps)
            p50, p95 = _p(samples, 0.5), _p(samples, 0.95)
            results.append((name, p50 * 1e3, p95 * 1e3, p50 / b50, p95 / b95))
    return results


def _round_of_queries(cur: Any, args: dict[str, str]) -> list[float]:
    """One run of every query of the app (seconds each)."""
    samples = []
    for _, query, extra in timed_queries():
        sql, names = to_psycopg(query)
        values = {**args, **extra}
        samples.extend(_time(cur, sql, [values[n] for n in names], 1))
    return samples


def during_rebuild(dsn_owner: str, reader: Any, days: int = REBUILD_DAYS) -> None:
    """p95 of the app's queries (7-day window) while `CALL dash_rollup_rebuild_by_day()` (V008)
    rebuilds the last `days` days, against the same queries at rest, measured in the same run."""
    import psycopg2

    args = _args(7)
    with reader.cursor() as cur:
        rest: list[float] = []
        for _ in range(5):
            rest.extend(_round_of_queries(cur, args))
        done = threading.Event()
        spent: dict[str, float] = {}

        def rebuild() -> None:
            owner = psycopg2.connect(dsn_owner)
            owner.autocommit = True  # the procedure commits after each day
            try:
                with owner.cursor() as rcur:
                    started = time.perf_counter()
                    rcur.execute(
                        "CALL dash_rollup_rebuild_by_day("
                        "now() - make_interval(days => %s), now() + interval '1 day')",
                        (days,),
                    )
                    spent["seconds"] = time.perf_counter() - started
            finally:
                owner.close()
                done.set()

        worker = threading.Thread(target=rebuild)
        worker.start()
        during: list[float] = []
        while not done.is_set():
            during.extend(_round_of_queries(cur, args))
        worker.join()
    p_rest, p_during = _p(rest, 0.95), _p(during, 0.95)
    print(
        f"dashboard during a rebuild by day (V008) of the last {days} days "
        f"({spent.get('seconds', 0):.1f} s): "
        f"p95 {p_during * 1e3:.1f} ms over {len(during)} queries / at rest {p_rest * 1e3:.1f} ms "
        f"= {p_during / p_rest:.2f} (goal p95 < 300 ms: {'ok' if p_during < 0.3 else 'over'}; "
        "the V005 TRUNCATE rebuild blocks every query for its whole run)",
        flush=True,
    )


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"terminated by signal {signum}")  # so that `finally` stops the PostgreSQL server


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    sys.path[:0] = [str(REPO), str(REPO / "lambda_src"), str(REPO / "controller")]
    import psycopg2

    from tests.fixtures.postgres import create_warehouse_template, start_pg_server

    server = start_pg_server()
    try:
        name = server.create_database(template=create_warehouse_template(server), prefix="benchdash")
        conn = psycopg2.connect(server.dsn(name))
        try:
            rate, rebuild, dim_rebuild = load(conn, EVENTS)
            rollup_sizes(conn, EVENTS)
        finally:
            conn.close()
        print(f"dashboard: loaded {EVENTS:,} synthetic events with COPY at {rate:,.0f} rows/s")
        print(
            f"dashboard: rollups (V005) rebuilt in {rebuild:.1f} s, "
            f"{rebuild / (EVENTS / rate):.2f}x the COPY load's time"
        )
        print(
            f"dashboard: dimension rollups (V031) rebuilt in {dim_rebuild:.1f} s, "
            f"{dim_rebuild / (EVENTS / rate):.2f}x the COPY load's time"
        )
        dash = server.users["sbw_dashboard"]
        reader = psycopg2.connect(server.dsn(name, dash.user, dash.password))
        reader.autocommit = True
        try:
            for days, reps in ((7, 5), (90, 3)):
                print(
                    f"dashboard: {days}-day window, {reps} runs each "
                    "(ratio = time / count(*) over the same window)"
                )
                print(f"   {'query':<32} {'p50 ms':>9} {'p95 ms':>9} {'p50 ratio':>10} {'p95 ratio':>10}")
                for query, p50, p95, r50, r95 in measure(reader, days, reps):
                    goal = "" if query.startswith("count") else ("  ok" if p95 < 300 else "  > 300 ms goal")
                    print(f"   {query:<32} {p50:9.1f} {p95:9.1f} {r50:10.2f} {r95:10.2f}{goal}", flush=True)
            during_rebuild(server.dsn(name), reader)
        finally:
            reader.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
