"""The dashboard's query layer (R, testthat) against a real PostgreSQL 15 with the real migrations.

pytest starts the database (tests/fixtures/postgres.py), loads a known data set, computes the
expected figures with an independent Python oracle (tests/dashboard_support.py), and runs the
app's testthat suite (roles/sbw_dashboard/files/app/tests/testthat) with connection files passed
through environment variables. Any failed expectation fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests import dashboard_dimensions_support as dd
from tests import dashboard_support as ds

ANCHOR = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DIM_ANCHOR = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)


def _dimension_cases(events: list[dict]) -> list[dict]:
    day = DIM_ANCHOR.date()
    return [
        dd.expected_dimension_case(events, ds.Filters(day - timedelta(days=6), day), False),
        dd.expected_dimension_case(events, ds.Filters(day - timedelta(days=6), day, "Asia/Singapore"), True),
        dd.expected_dimension_case(
            events, ds.Filters(day - timedelta(days=30), day, "America/New_York"), False
        ),
    ]


def _cases(events: list[dict]) -> list[dict]:
    day = ANCHOR.date()
    filters = [
        ds.Filters(day - timedelta(days=6), day),
        ds.Filters(day - timedelta(days=6), day, "Asia/Singapore"),
        ds.Filters(day - timedelta(days=3), day, "UTC", category="shoes"),
        ds.Filters(day - timedelta(days=6), day, "UTC", brand="acme", event_name="product_view"),
        ds.Filters(day - timedelta(days=35), day, "America/New_York", category="watches", brand="initech"),
        ds.Filters(day - timedelta(days=35), day, "Asia/Singapore", event_name="purchase"),
        ds.Filters(date(2027, 1, 1), date(2027, 1, 7)),
        ds.Filters(day - timedelta(days=6), day, include_bots=True),
    ]
    return [ds.expected_case(events, f) for f in filters]


def test_dashboard_query_layer_matches_the_oracle(pg_server, dw_template, dw_db, tmp_path: Path) -> None:
    rscript = shutil.which("Rscript")
    assert rscript, "Rscript missing: apt-get install r-base-core r-cran-testthat (see .ci/apt-packages.txt)"
    events = ds.make_events(ANCHOR)
    dim_events = dd.make_dimension_events(DIM_ANCHOR)  # a year earlier: the KPI cases never see them
    conn = dw_db.connect()
    try:
        # first, so that their dimension refresh folds them alone (load_events refreshes V005 only);
        # the cases reach 30 days back in New York time: keep the hourly cells of that window
        with conn.cursor() as cur:
            cur.execute("UPDATE dash_dim_state SET hourly_days = 40")
        dd.load_dimension_events(conn, sorted(dim_events, key=lambda e: e["event_timestamp"]), batches=2)
        ds.load_events(conn, events)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO etl_runs (started_at, finished_at, status, rows_inserted) VALUES "
                "(%s, %s, 'failed', 0), (%s, %s, 'succeeded', %s)",
                (
                    ANCHOR - timedelta(hours=2),
                    ANCHOR - timedelta(hours=2) + timedelta(seconds=3),
                    ANCHOR - timedelta(hours=1),
                    ANCHOR - timedelta(hours=1) + timedelta(seconds=42),
                    len(events),
                ),
            )
    finally:
        conn.close()
    cases = _cases(events)
    assert (
        cases[0]["kpis"]["purchases"] > 0 and cases[-2]["kpis"]["events"] == 0
    )  # the data set is meaningful
    assert cases[0]["events_per_day"] != cases[1]["events_per_day"]  # timezones change the daily buckets
    assert cases[-1]["kpis"]["events"] > cases[0]["kpis"]["events"]  # bots: counted only when asked for

    empty_name = pg_server.create_database(template=dw_template, prefix="dwempty")
    try:
        dash = dw_db.dashboard
        expected = tmp_path / "expected.json"
        expected.write_text(json.dumps({"cases": cases}), encoding="utf-8")
        dim_expected = tmp_path / "expected-dimensions.json"
        dim_expected.write_text(json.dumps({"cases": _dimension_cases(dim_events)}), encoding="utf-8")
        newest = max(e["event_timestamp"] for e in events)
        env = {
            **os.environ,
            "TZ": "UTC",
            "SBW_APP_DIR": str(ds.APP_DIR),
            "SBW_DASHBOARD_DB_CONFIG": str(
                ds.write_db_config(
                    tmp_path / "db.dcf", dw_db.host, dw_db.port, dw_db.name, dash.user, dash.password
                )
            ),
            "SBW_TEST_EMPTY_DB_CONFIG": str(
                ds.write_db_config(
                    tmp_path / "empty.dcf", dw_db.host, dw_db.port, empty_name, dash.user, dash.password
                )
            ),
            "SBW_TEST_DOWN_DB_CONFIG": str(
                ds.write_db_config(tmp_path / "down.dcf", "127.0.0.1", ds.free_port(), "x", dash.user, "x")
            ),
            "SBW_TEST_ADMIN_PASSWORD": pg_server.superuser_password,
            "SBW_TEST_EXPECTED": str(expected),
            "SBW_TEST_DIM_EXPECTED": str(dim_expected),
            "SBW_TEST_NEWEST_EVENT": newest.strftime("%Y-%m-%d %H:%M:%S"),
            "SBW_TEST_LAST_RUN_ROWS": str(len(events)),
            "SBW_TEST_LAST_RUN_FINISHED": (ANCHOR - timedelta(hours=1) + timedelta(seconds=42)).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
        }
        test_dir = ds.APP_DIR / "tests" / "testthat"
        code = (
            f"res <- testthat::test_dir('{test_dir}', reporter = 'summary', stop_on_failure = FALSE); "
            "df <- as.data.frame(res); "
            "cat(sprintf('\\nSBW_RESULT tests=%d expectations=%d failed=%d errors=%d skipped=%d\\n', "
            "nrow(df), sum(df$nb), sum(df$failed), sum(df$error), sum(df$skipped)))"
        )
        result = subprocess.run(
            [rscript, "-e", code], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
    finally:
        pg_server.drop_database(empty_name)
    output = result.stdout + result.stderr
    match = re.search(
        r"SBW_RESULT tests=(\d+) expectations=(\d+) failed=(\d+) errors=(\d+) skipped=(\d+)", output
    )
    assert result.returncode == 0 and match, output
    tests, expectations, failed, errors, skipped = map(int, match.groups())
    assert (failed, errors, skipped) == (0, 0, 0), output
    assert tests == 17 and expectations >= 350, output


@pytest.mark.parametrize("tz", ["UTC", "Asia/Singapore"])
def test_dashboard_sql_matches_the_oracle_from_python_too(dw_db, tz: str) -> None:
    """The same SQL file, run from Python with psycopg2 (what the benchmark does), agrees too."""
    events = ds.make_events(ANCHOR, seed=3, sessions=40)
    conn = dw_db.connect()
    try:
        ds.load_events(conn, events)
    finally:
        conn.close()
    f = ds.Filters(ANCHOR.date() - timedelta(days=6), ANCHOR.date(), tz)
    row = ds.run_dashboard_query(dw_db, "kpis", f.as_r())
    want = ds.kpis(events, f)
    assert {k: float(row[k]) for k in want} == pytest.approx(want)
