"""Synthetic shoppers: realistic shop traffic posted to any clickstream ingest URL (`traffic` command).

Model, in one paragraph: visitors' batches arrive at the API as a Poisson process (`--rate` sessions
per second, exponential gaps from the seeded RNG). Each arrival is one shopper session, simulated on
a clock advanced by think times and *ending* at the arrival (a tracker flushes its batch when the
page is hidden), so no event is ever in the future. A session lands on the home, a category or a
product page, browses (page views, product views over the catalog with a popularity skew, searches),
adds to the cart, and goes through the funnel (begin_checkout, purchase; one event per cart line,
so purchases <= checkouts <= add_to_carts) with drop-off rates. Visitors are new (is_first_visit)
or returning (from the run or from a seeded prior customer base); registered visitors carry a
Cognito-like `sub` as user_id (identity_source cognito) when logged in, may log in or sign up
at checkout, and sometimes log out. Timestamps are RFC 3339 with the visitor's UTC offset. Every
event carries contract v1.1's page context (`traffic_context`): the page (home, category, product,
search results, cart, checkout), the previous page as referrer, and on the landing page the
session's traffic source (search engine, social network, newsletter, paid click, referring site or
direct) as referrer and UTM tags; each visitor keeps one browser (User-Agent header, screen,
viewport, locale, time zone), a share of them crawlers (`--bot-share`), counted as `bot_events`.

Everything is deterministic for a `--seed` and a `--start-time`. Events are posted in batches
(`{"events": [...]}`, optionally gzip) by a few worker threads, each with a keep-alive connection.
Exit code: 0 when every event was accepted, 1 when the API rejected (4xx) or failed (after
retries) anything, 2 on usage errors.

The pieces: `traffic_simulate` (the shopper model and the schedule), `traffic_context` (browsers,
sources and pages), `traffic_send` (workers, retries,
statistics), `traffic_run` (one run and its summary); this module is the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sbw_ops import catalog as catalog_module
from sbw_ops.catalog import Product
from sbw_ops.traffic_run import Progress, RunConfig, Summary, run
from sbw_ops.traffic_send import Sender, Stats, percentile
from sbw_ops.traffic_simulate import (
    DEFAULT_MAX_EVENT_AGE,
    MAX_SESSION,
    USER_AGENTS,
    Profile,
    Session,
    ShopperSimulator,
    Visitor,
    batches,
    poisson_gaps,
    schedule,
)

# What the package offers under `sbw_ops.traffic` (tests, the platform demo, benchmarks).
__all__ = [
    "DEFAULT_MAX_EVENT_AGE",
    "MAX_SESSION",
    "USER_AGENTS",
    "Profile",
    "Progress",
    "RunConfig",
    "Sender",
    "Session",
    "ShopperSimulator",
    "Stats",
    "Summary",
    "Visitor",
    "batches",
    "build_parser",
    "config_from_args",
    "load_products",
    "main",
    "parse_duration",
    "parse_time",
    "percentile",
    "poisson_gaps",
    "run",
    "schedule",
]


def load_products(catalog_dsn: str | None, catalog_csv: Path | None) -> list[Product]:
    """The catalog from the OLTP database (`products` table) or from a CSV (the committed sample)."""
    if catalog_dsn:
        import psycopg2
        import psycopg2.extras

        conn = psycopg2.connect(catalog_dsn)
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(CATALOG_QUERY)
                rows = cur.fetchall()
        finally:
            conn.close()
        products = [catalog_module.product_from_mapping(dict(row)) for row in rows]
        if not products:
            raise ValueError("the products table is empty")
        return products
    return catalog_module.load_csv(catalog_csv or catalog_module.SAMPLE_CSV)


# clickstream_web (roles/oltp_schema/files/migrations): stock lives in inventory.quantity.
CATALOG_QUERY = """
SELECT p.product_id, p.name, p.category, p.brand, p.price, p.discount_price, p.url_path,
       COALESCE(i.quantity, 0) AS stock
FROM public.products AS p LEFT JOIN public.inventory AS i USING (product_id)
ORDER BY p.product_id
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `36h`, `2d` -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 36h, 2d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="traffic",
        description="Synthetic shoppers: post realistic clickstream traffic to an ingest URL.",
        epilog="Exit codes: 0 all accepted, 1 something rejected or failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SBW_INGEST_URL"),
        help="ingest URL, e.g. http://127.0.0.1:8080/clickstream (default: $SBW_INGEST_URL)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed: same seed, same traffic (default 1)")
    parser.add_argument("--rate", type=float, default=5.0, help="sessions per second, Poisson (default 5)")
    parser.add_argument("--sessions", type=int, help="stop after this many sessions")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--batch-size", type=int, default=25, help="events per request (1..500, default 25)")
    parser.add_argument("--workers", type=int, default=4, help="sending threads (default 4)")
    parser.add_argument("--gzip", action="store_true", help="send bodies with Content-Encoding: gzip")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--catalog-dsn", help="read products from this OLTP database (clickstream_web)")
    source.add_argument("--catalog-csv", type=Path, help="read products from this CSV (default: the sample)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument(
        "--backdate",
        type=parse_duration,
        default=timedelta(0),
        help="start the simulated clock this long ago (2d)",
    )
    clock.add_argument("--start-time", type=parse_time, help="simulated clock start (RFC 3339, with offset)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (>1 with --backdate spreads traffic over the past)",
    )
    parser.add_argument(
        "--max-event-age",
        type=parse_duration,
        default=DEFAULT_MAX_EVENT_AGE,
        help="the ingest's accepted window (MAX_EVENT_AGE_HOURS, default 7d): --backdate must fit in it",
    )
    parser.add_argument("--returning-share", type=float, help="share of sessions by returning visitors")
    parser.add_argument("--add-to-cart-rate", type=float, help="add to cart per product view")
    parser.add_argument("--checkout-rate", type=float, help="carts that begin the checkout")
    parser.add_argument("--purchase-rate", type=float, help="checkouts that end with a purchase")
    parser.add_argument("--bot-share", type=float, help="new visitors that are crawlers (default 0.03)")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto", help="progress bar"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    profile = Profile()
    overrides = {
        name: getattr(args, name)
        for name in ("returning_share", "add_to_cart_rate", "checkout_rate", "purchase_rate", "bot_share")
        if getattr(args, name) is not None
    }
    if overrides:
        profile = replace(profile, **overrides)
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {item!r} is not NAME:VALUE")
        headers[name.strip()] = value.strip()
    if not args.url:
        raise ValueError("--url is required (or set SBW_INGEST_URL)")
    return RunConfig(
        url=args.url,
        seed=args.seed,
        rate=args.rate,
        sessions=args.sessions,
        duration=args.duration,
        batch_size=args.batch_size,
        workers=args.workers,
        use_gzip=args.gzip,
        timeout=args.timeout,
        start_time=args.start_time,
        backdate=args.backdate,
        time_scale=args.time_scale,
        max_event_age=args.max_event_age,
        profile=profile,
        headers=headers,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.sessions is None and args.duration is None:
            config = replace(config, sessions=100)
        config.check()
        products = load_products(args.catalog_dsn, args.catalog_csv)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    except Exception as exc:  # database errors: psycopg2 is imported lazily
        parser.error(f"cannot read the catalog: {exc}")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish cleanly, still summarise
    try:
        summary = run(config, products, progress_stream=sys.stderr, progress_mode=args.progress, stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.text())
    if stop.is_set():
        return 130
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
