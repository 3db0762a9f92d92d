"""Synthetic shoppers against the REAL local ingest API (subprocess) writing to a moto S3 server."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sbw_clickstream.contract import ENRICHMENT_FIELDS, validate_stored_event
from sbw_ops import catalog, traffic

from tests.fixtures.moto import S3Bucket
from tests.service_support import local_api_process, stored_events

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def api_url(s3_bucket: S3Bucket, tmp_path: Path) -> Iterator[str]:
    with local_api_process(s3_bucket, tmp_path / "local_api.log") as url:
        yield url


def _client_view(event: dict[str, Any]) -> str:
    """The event as the client sent it (enrichment removed, the generator's event_id kept), canonical JSON."""
    kept = {k: v for k, v in event.items() if k not in ENRICHMENT_FIELDS}
    return json.dumps(kept, sort_keys=True)


@pytest.mark.parametrize("use_gzip", [False, True], ids=["json", "gzip"])
def test_events_sent_equal_events_in_the_bucket(s3_bucket: S3Bucket, api_url: str, use_gzip: bool) -> None:
    products = catalog.load_csv()
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    config = traffic.RunConfig(
        url=api_url,
        seed=8,
        rate=200.0,
        sessions=60,
        batch_size=7,
        workers=3,
        use_gzip=use_gzip,
        start_time=start,
    )
    summary = traffic.run(config, products)
    assert summary.ok, summary.text()
    assert summary.rejected_requests == summary.failed_requests == 0
    assert summary.sessions == 60
    assert summary.accepted_events == summary.events == sum(summary.events_by_name.values())

    # what the generator produces for this seed and clock is exactly what landed in the bucket
    expected = [
        event
        for plan in itertools.islice(traffic.schedule(products, seed=8, rate=200.0, start_time=start), 60)
        for event in plan.session.events
    ]
    stored = stored_events(s3_bucket)
    assert len(stored) == summary.events == len(expected)
    assert Counter(_client_view(e) for e in stored) == Counter(
        json.dumps(e, sort_keys=True) for e in expected
    )
    assert Counter(e["event_name"] for e in stored) == Counter(summary.events_by_name)
    agents = {
        plan.session.client_id: plan.session.user_agent
        for plan in itertools.islice(traffic.schedule(products, seed=8, rate=200.0, start_time=start), 60)
    }
    for event in stored:
        assert validate_stored_event(event) == [], event
        assert event["user_agent"] in traffic.USER_AGENTS
        assert event["user_agent"] == agents[event["client_id"]]  # the visitor's UA went as the header
    # the summary's bot_events are the events ingest stored as bots (what the dashboard filters out)
    assert summary.bot_events == sum(event["is_bot"] for event in stored)
    # one object per request (batches of at most 7 events), and the summary knows every key
    keys = s3_bucket.keys("events/")
    assert sorted(summary.keys) == keys
    assert len(keys) == summary.requests
    assert all(len(s3_bucket.read(k).decode().splitlines()) <= 7 for k in keys)
    assert summary.latency_p50_ms > 0 and summary.latency_p99_ms >= summary.latency_p50_ms
    plain_bytes = sum(
        len(json.dumps({"events": batch}, separators=(",", ":")).encode())
        for plan in itertools.islice(traffic.schedule(products, seed=8, rate=200.0, start_time=start), 60)
        for batch in traffic.batches(plan.session.events, 7)
    )
    if use_gzip:  # the bodies really went compressed (and ingest decoded them)
        assert summary.bytes_sent < 0.5 * plain_bytes
    else:
        assert summary.bytes_sent == plain_bytes


def test_bot_events_are_what_ingest_flags_as_bots(s3_bucket: S3Bucket, api_url: str) -> None:
    config = traffic.RunConfig(
        url=api_url,
        seed=12,
        rate=500.0,
        sessions=80,
        batch_size=10,
        workers=3,
        start_time=(datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0),
        profile=traffic.Profile(bot_share=0.3),
    )
    summary = traffic.run(config, catalog.load_csv())
    assert summary.ok, summary.text()
    stored = stored_events(s3_bucket)
    bots = [event for event in stored if event["is_bot"]]
    assert 0 < summary.bot_events == len(bots) < summary.accepted_events == len(stored)
    assert {event["device_class"] for event in bots} == {"bot"}
    assert summary.as_dict()["bot_events"] == len(bots)
    assert f"({len(bots)} from bots)" in summary.text()


def run_cli(command: list[str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The generator's command line against `url` (stdout: the JSON summary, stderr: progress)."""
    return subprocess.run(
        [*command, "--url", url, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_command_reports_json_and_exits_0(s3_bucket: S3Bucket, api_url: str, tmp_path: Path) -> None:
    result = run_cli(
        [str(Path(sys.executable).with_name("traffic"))],  # the installed entry point
        api_url,
        *["--sessions", "20", "--rate", "100", "--seed", "3", "--json", "--progress", "always"],
        *["--backdate", "1d", "--time-scale", "600"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["sessions"] == 20
    assert summary["objects_written"] == summary["requests"] == len(s3_bucket.keys("events/"))
    assert len(stored_events(s3_bucket)) == summary["events"]
    assert "100.0%" in result.stderr  # the progress line (plain lines when stderr is not a tty)
    first = datetime.fromisoformat(summary["first_timestamp"])
    assert datetime.now(UTC) - first > timedelta(hours=20)  # backdated by a day, within the window


def test_rejected_traffic_exits_1_and_stores_nothing(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    # The API accepts only the last hour; the generator backdates by 3 hours: every batch gets 400.
    with local_api_process(s3_bucket, tmp_path / "api.log", {"MAX_EVENT_AGE_HOURS": "1"}) as url:
        result = run_cli(
            [sys.executable, "-m", "sbw_ops.traffic"],
            url,
            *["--sessions", "5", "--rate", "100", "--backdate", "3h", "--json", "--progress", "never"],
        )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["rejected_requests"] == summary["requests"] > 0
    assert summary["rejected_events"] == summary["events"] > 0
    assert summary["statuses"] == {"400": summary["requests"]}
    assert "older than the accepted window" in summary["errors"][0]
    assert s3_bucket.keys("events/") == []
    assert len(s3_bucket.keys("failed/")) == summary["requests"]  # each rejection recorded for diagnosis


def test_text_summary_names_rejections(s3_bucket: S3Bucket, tmp_path: Path, capsys) -> None:
    with local_api_process(s3_bucket, tmp_path / "api.log", {"MAX_EVENTS_PER_REQUEST": "3"}) as url:
        code = traffic.main(["--url", url, "--sessions", "4", "--rate", "100", "--batch-size", "10"])
    out = capsys.readouterr().out
    assert code == 1
    assert "rejected: " in out and "rejected: 0 requests" not in out
    assert "error: HTTP 4" in out


def test_catalog_from_the_oltp_database(pg_database: Any) -> None:
    """--catalog-dsn reads clickstream_web's real schema (the oltp_schema migration) loaded with the CSV."""
    migration = REPO / "roles" / "oltp_schema" / "files" / "migrations" / "V001__shop.sql"
    conn = pg_database.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(migration.read_text(encoding="utf-8"))
            cur.execute(
                "CREATE TEMP TABLE staged (product_id text, name text, category text, brand text, "
                "price numeric(12,2), discount_price numeric(12,2), url_path text, stock integer)"
            )
            with catalog.SAMPLE_CSV.open(encoding="utf-8") as handle:
                cur.copy_expert("COPY staged FROM STDIN WITH (FORMAT csv, HEADER MATCH)", handle)
            cur.execute(
                "INSERT INTO products (product_id, name, category, brand, price, discount_price, url_path) "
                "SELECT product_id, name, category, brand, price, discount_price, url_path FROM staged"
            )
            cur.execute("INSERT INTO inventory (product_id, quantity) SELECT product_id, stock FROM staged")
            cur.execute("UPDATE products SET name = 'Renamed In The Shop' WHERE product_id = '1001'")
    finally:
        conn.close()
    from_db = traffic.load_products(pg_database.dsn(), None)
    from_csv = {p.product_id: p for p in catalog.load_csv()}
    assert len(from_db) == len(from_csv)
    for product in from_db:
        expected = from_csv[product.product_id]
        if product.product_id == "1001":
            assert product.name == "Renamed In The Shop"
            expected = dataclasses.replace(expected, name="Renamed In The Shop")
        assert product == expected
