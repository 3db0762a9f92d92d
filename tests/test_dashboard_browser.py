"""sbw_dashboard in a real browser (Debian's Chromium driven by Playwright), waiting in real time.

The main test serves the app the way an operator sees it: the Shiny app runs in its own network
namespace (like the sandbox's dwh host: only its loopback 3838, database over a unix socket), and
`playbooks/port_forward.yml`'s sandbox backend (socat + nsenter) forwards a free local port to it,
websocket included. The KPIs on the page must equal the oracle's figures for the known data set
(tests/dashboard_support.py), before and after a filter change; the page has no R or JS errors;
a screenshot is kept in artifacts/. A second test covers "no data yet" and a lost database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS, SHINY_IDLE_JS

from tests import dashboard_support as ds

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
KPI_IDS = [
    "events",
    "sessions",
    "users",
    "logged_in_users",
    "guest_visitors",
    "first_visits",
    "product_views",
    "add_to_carts",
    "purchases",
]


@pytest.fixture
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        try:
            yield page, errors
        finally:
            browser.close()


def _wait_ready(page: Page) -> None:
    page.wait_for_function(
        SHINY_IDLE_JS + " && document.getElementById('kpi_events').textContent.length > 0", timeout=90_000
    )


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


def _kpis(page: Page) -> dict[str, float]:
    values = {k: _number(page.text_content(f"#kpi_{k}") or "") for k in [*KPI_IDS, "revenue"]}
    values["conversion_rate"] = _number(page.text_content("#kpi_conversion_rate") or "") / 100
    return values


def _expected(events: list[dict], f: ds.Filters) -> dict[str, float]:
    k = ds.kpis(events, f)
    return {
        **{key: k[key] for key in KPI_IDS},
        "revenue": round(k["revenue"], 2),
        "conversion_rate": k["conversion_rate"],
    }


def _choose(page: Page, select_id: str, value: str) -> None:
    """Pick an option of a selectize input with the mouse, like an analyst."""
    page.click(f"#{select_id} + .selectize-control .selectize-input")
    page.click(f"#{select_id} + .selectize-control .selectize-dropdown .option[data-value='{value}']")


def _change_and_wait(page: Page, action, before: str) -> None:
    action()
    page.wait_for_function(
        "(b) => document.getElementById('kpi_events').textContent !== b", arg=before, timeout=60_000
    )
    page.wait_for_function(SHINY_IDLE_JS, timeout=60_000)


def _no_r_errors(page: Page, log: Path) -> None:
    assert page.locator(".shiny-output-error:not(.shiny-output-error-validation)").count() == 0
    body = page.text_content("body") or ""
    assert "Error in" not in body and "Traceback" not in body
    assert "Error" not in log.read_text(errors="replace"), log.read_text(errors="replace")


def _forward(inventory: Path, run_dir: Path, port: int, state: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    cmd = [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        "-i",
        str(inventory),
        "playbooks/port_forward.yml",
    ]
    cmd += ["-e", f"pf_state={state}", "-e", f"pf_local_port={port}", "-e", f"pf_run_dir={run_dir}"]
    cmd += ["-e", "pf_path=/"]  # a plain Shiny process serves the app at / (Shiny Server: /sbw_dashboard/)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_dashboard_through_the_port_forward_shows_the_sql_counts(
    pg_server, dw_db, tmp_path, browser_page
) -> None:
    page, errors = browser_page
    now = datetime.now(UTC)
    events = ds.make_events(now - timedelta(minutes=20), seed=21, sessions=90, spread_days=5.5)
    conn = dw_db.connect()
    try:
        ds.load_events(conn, events)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO etl_runs (started_at, finished_at, status, rows_inserted) "
                "VALUES (now() - interval '5 minutes', now() - interval '4 minutes', 'succeeded', %s)",
                (len(events),),
            )
    finally:
        conn.close()
    dash = dw_db.dashboard
    socket_dir = pg_server.base / "sock"  # no network in the app's namespace: a unix socket
    config = ds.write_db_config(
        tmp_path / "db.dcf", str(socket_dir), dw_db.port, dw_db.name, dash.user, dash.password
    )
    log = tmp_path / "shiny.log"
    app = ds.start_shiny_in_netns(config, log)
    run = tmp_path / "run"
    run.mkdir()
    (run / "dwh.pid").write_text(str(app.pid), encoding="utf-8")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    role_dwh:\n      hosts:\n        dwh:\n"
        f"          sandbox_run_dir: {run}\n          sbw_port_forward_backend: sandbox\n",
        encoding="utf-8",
    )
    port = ds.free_port()
    forwards = tmp_path / "forwards"
    try:
        started = _forward(inventory, forwards, port, "started")
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"http://127.0.0.1:{port}/"
        assert json.dumps(f"PORT_FORWARD up, healthy: {url}")[1:-1] in started.stdout

        page.goto(url)
        _wait_ready(page)
        date_from = date.fromisoformat(page.input_value("#date_from input"))
        date_to = date.fromisoformat(page.input_value("#date_to input"))
        assert (date_to - date_from).days == 6  # default: the last 7 days, in the default timezone UTC
        assert page.input_value("#timezone") == "UTC"
        everything = ds.Filters(date_from, date_to, "UTC")
        assert _kpis(page) == pytest.approx(_expected(events, everything), abs=0.0051)
        assert page.locator("#sbw-no-data, #sbw-db-error").count() == 0
        newest = max(e["event_timestamp"] for e in events).strftime("%Y-%m-%d %H:%M:%S")
        assert f"Newest event: {newest} UTC" in (page.text_content("#sbw-newest-event") or "")
        assert "Last ETL run: succeeded" in (page.text_content("#sbw-last-etl-run") or "")

        # A filter changes the figures, to the oracle's values for that filter.
        before = page.text_content("#kpi_events") or ""
        _change_and_wait(page, lambda: _choose(page, "category", "shoes"), before)
        shoes = ds.Filters(date_from, date_to, "UTC", category="shoes")
        assert _kpis(page) == pytest.approx(_expected(events, shoes), abs=0.0051)

        before = page.text_content("#kpi_events") or ""
        _change_and_wait(page, lambda: _choose(page, "event_name", "product_view"), before)
        views = ds.Filters(date_from, date_to, "UTC", category="shoes", event_name="product_view")
        assert _kpis(page) == pytest.approx(_expected(events, views), abs=0.0051)

        page.click("a[data-value='Funnel']")
        page.wait_for_function(
            SHINY_IDLE_JS + " && document.querySelector('#funnel_table table') !== null", timeout=60_000
        )
        cells = page.locator("#funnel_table table tbody tr td:nth-child(2)").all_text_contents()
        assert [int(_number(c)) for c in cells] == ds.funnel(events, shoes)  # the funnel ignores event_name

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        _no_r_errors(page, log)
        assert errors == []
    finally:
        stopped = _forward(inventory, forwards, port, "stopped")
        app.kill()
        app.wait()
        ds.end_forwarders(forwards)  # only if the stop failed
    assert stopped.returncode == 0, stopped.stdout


def test_dashboard_says_no_data_yet_and_database_unavailable(
    pg_server, dw_db, tmp_path, browser_page
) -> None:
    page, errors = browser_page
    dash = dw_db.dashboard
    empty = ds.write_db_config(
        tmp_path / "db.dcf", dw_db.host, dw_db.port, dw_db.name, dash.user, dash.password
    )
    log = tmp_path / "empty.log"
    app, port = ds.start_shiny(empty, log)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#sbw-no-data", timeout=90_000)
        page.wait_for_function(SHINY_IDLE_JS, timeout=60_000)
        assert "No data yet" in (page.text_content("#sbw-no-data") or "")
        assert (page.text_content("#kpi_events") or "") == "No data yet."  # a sentence, not zeros
        assert "No data yet" in (page.text_content("#events_plot") or "")
        _no_r_errors(page, log)
    finally:
        app.kill()
        app.wait()

    down_port = ds.free_port()  # nothing listens there: the database is gone
    down = ds.write_db_config(
        tmp_path / "down.dcf", "127.0.0.1", down_port, dw_db.name, dash.user, dash.password
    )
    log = tmp_path / "down.log"
    app, port = ds.start_shiny(down, log)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#sbw-db-error", timeout=90_000)
        page.wait_for_function(SHINY_IDLE_JS, timeout=60_000)
        banner = page.text_content("#sbw-db-error") or ""
        assert (
            "Database unavailable" in banner
            and f"Cannot connect to the warehouse database at 127.0.0.1:{down_port}" in banner
        )
        assert (page.text_content("#kpi_events") or "") == "unavailable"  # the banner says why
        body = page.text_content("body") or ""
        assert "RPosgreSQL" not in body and "postgresqlNewConnection" not in body and "Error in" not in body
        assert page.locator(".shiny-output-error:not(.shiny-output-error-validation)").count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-db-down.png"), full_page=True)
    finally:
        app.kill()
        app.wait()
    assert errors == []
