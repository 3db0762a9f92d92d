"""sbw_dashboard in a real browser (Debian's Chromium driven by Playwright), waiting in real time.

The main test serves the app the way an operator sees it: the Shiny app runs in its own network
namespace (like the sandbox's dwh host: only its loopback 3838, database over a unix socket), and
`playbooks/port_forward.yml` forwards a free local port to it through SSM as on AWS (`aws ssm
start-session`, the sandbox's SSM endpoint and plugin stand-ins: tests/ssm_support.py), websocket
included. The KPIs on the page must equal the oracle's figures for the known data set
(tests/dashboard_support.py), before and after a filter change; the page has no R or JS errors;
a screenshot is kept in artifacts/. A second test covers "no data yet" and a lost database.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from sbw_ops import platform_observe as observe
from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS, SHINY_IDLE_JS

from tests import dashboard_dimensions_support as dd
from tests import dashboard_support as ds
from tests.ssm_support import SsmStandIn, ssm_stand_in

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


INSTANCE = "i-0d0a5b0a4d0000001"


def _forward(ssm: SsmStandIn, run_dir: Path, port: int, state: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **ssm.env(f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    }
    cmd = [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        "playbooks/port_forward.yml",
        "-e",
        f"pf_target={INSTANCE}",
    ]
    cmd += ["-e", f"pf_state={state}", "-e", f"pf_local_port={port}", "-e", f"pf_run_dir={run_dir}"]
    cmd += ["-e", "pf_path=/"]  # a plain Shiny process serves the app at / (Shiny Server: /sbw_dashboard/)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_dashboard_through_the_port_forward_shows_the_sql_counts(
    pg_server, dw_db, tmp_path, browser_page, moto_endpoint_url
) -> None:
    with contextlib.ExitStack() as stack:
        _through_the_port_forward(pg_server, dw_db, tmp_path, browser_page, moto_endpoint_url, stack)


def _through_the_port_forward(
    pg_server, dw_db, tmp_path, browser_page, moto_endpoint_url: str, stack: contextlib.ExitStack
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
    (tmp_path / "dwh.pid").write_text(str(app.pid), encoding="utf-8")
    ssm = stack.enter_context(ssm_stand_in(tmp_path / "ssm", moto_endpoint_url))
    ssm.connect(INSTANCE, tmp_path / "dwh.pid")
    port = ds.free_port()
    forwards = tmp_path / "forwards"
    try:
        started = _forward(ssm, forwards, port, "started")
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
        stopped = _forward(ssm, forwards, port, "stopped")
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


# ---------------------------------------------------------------- the dimension tabs (V031)

TAB_TABLES = {
    "Acquisition": ["acq_channels", "acq_sources", "acq_referrers", "acq_campaigns"],
    "Pages": ["pages_top", "pages_entry", "pages_exit"],
    "Technology": ["tech_browsers", "tech_os", "tech_devices"],
    "Retention": ["ret_active", "ret_cohorts", "ret_daily"],
    "Comparison": ["cmp_table"],
}


def _open_tab(page: Page, tab: str) -> None:
    page.click(f"a[data-value='{tab}']")
    first = TAB_TABLES.get(tab, [None])[0]
    ready = f" && document.querySelector('#{first} table') !== null" if first else ""
    if tab == "Export":  # a download link gets its URL once Shiny shows it
        ready = " && (document.getElementById('dl_kpis').getAttribute('href') || '').includes('session/')"
    page.wait_for_function(SHINY_IDLE_JS + ready, timeout=60_000)


def _table(page: Page, output_id: str) -> list[list[str]]:
    rows = page.locator(f"#{output_id} table tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("td").all_text_contents()] for i in range(rows.count())]


def _sessions_by_value(rows: list[list[str]]) -> dict[str, int]:
    return {r[0]: int(_number(r[1])) for r in rows}


def test_dimension_tabs_show_the_sql_counts_compare_and_export(
    pg_server, dw_db, tmp_path, browser_page
) -> None:
    """Every new tab against the oracle of the known data set, the comparison against the same
    KPI query run for the previous period, a CSV download against its table, the bot toggle; one
    screenshot per tab in artifacts/ (dashboard-<tab>.png)."""
    page, errors = browser_page
    now = datetime.now(UTC)
    events = dd.make_dimension_events(now - timedelta(minutes=20), seed=41, sessions=220, weeks=5)
    conn = dw_db.connect()
    try:
        dd.load_dimension_events(conn, sorted(events, key=lambda e: e["event_timestamp"]), batches=2)
    finally:
        conn.close()
    dash = dw_db.dashboard
    config = ds.write_db_config(
        tmp_path / "db.dcf", dw_db.host, dw_db.port, dw_db.name, dash.user, dash.password
    )
    log = tmp_path / "shiny.log"
    app, port = ds.start_shiny(config, log)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        _wait_ready(page)
        date_from = date.fromisoformat(page.input_value("#date_from input"))
        date_to = date.fromisoformat(page.input_value("#date_to input"))
        f = ds.Filters(date_from, date_to, "UTC")
        assert page.is_checked("#include_bots") is False

        _open_tab(page, "Acquisition")
        assert _sessions_by_value(_table(page, "acq_channels")) == {
            k: v["sessions"] for k, v in dd.dimension_sessions(events, f, "channel_group").items()
        }
        referrers = dd.dimension_sessions(events, f, "referrer_host")
        assert _sessions_by_value(_table(page, "acq_referrers")) == {
            k: v["sessions"] for k, v in referrers.items()
        }
        campaigns = {
            (r[0], r[1], r[2]): (int(_number(r[3])), round(_number(r[6]), 2))
            for r in _table(page, "acq_campaigns")
        }
        assert campaigns == {
            k: (v["sessions"], round(v["revenue"], 2))
            for k, v in dd.dimension_sessions(events, f, "campaign").items()
        }
        page.screenshot(path=str(ARTIFACTS / "dashboard-acquisition.png"), full_page=True)

        _open_tab(page, "Pages")
        pages = dd.top_pages(events, f)
        assert {r[0]: [int(_number(c)) for c in r[1:5]] for r in _table(page, "pages_top")} == {
            k: [v["views"], v["sessions"], v["entries"], v["exits"]] for k, v in pages.items()
        }
        summary = dd.pages_summary(events, f)
        assert _number(page.text_content("#pages_views") or "") == summary["page_views"]
        # shown with two decimals: R rounds half away from zero, Python's round() of the float may not
        assert _number(page.text_content("#pages_per_session") or "") == pytest.approx(
            summary["page_views"] / summary["sessions"], abs=0.005 + 1e-9
        )
        page.screenshot(path=str(ARTIFACTS / "dashboard-pages.png"), full_page=True)

        _open_tab(page, "Technology")
        devices = dd.dimension_sessions(events, f, "device_class")
        assert _sessions_by_value(_table(page, "tech_devices")) == {
            k: v["sessions"] for k, v in devices.items()
        }
        assert "bot" not in devices  # excluded by default
        browsers = dd.dimension_sessions(events, f, "browser")
        assert _sessions_by_value(_table(page, "tech_browsers")) == {
            k: v["sessions"] for k, v in browsers.items()
        }
        page.screenshot(path=str(ARTIFACTS / "dashboard-technology.png"), full_page=True)

        _open_tab(page, "Retention")
        active = dd.active_users(events, f)
        row = _table(page, "ret_active")[0]
        assert [_number(c) for c in row[:3]] == [
            pytest.approx(active["dau"], abs=0.006),
            active["wau"],
            active["mau"],
        ]
        cohorts = dd.retention_cohorts(events, f)
        sizes = {c: v for (c, n), v in cohorts.items() if n == 0}
        assert {r[0]: int(_number(r[1])) for r in _table(page, "ret_cohorts")} == sizes
        page.screenshot(path=str(ARTIFACTS / "dashboard-retention.png"), full_page=True)

        # Comparison: each tile's change = the KPI query of this period against the previous one.
        _open_tab(page, "Comparison")
        days = (date_to - date_from).days + 1
        prev = ds.Filters(date_from - timedelta(days=days), date_from - timedelta(days=1), "UTC")
        values = {"include_bots": "false"}
        cur_k = ds.run_dashboard_query(dw_db, "kpis", {**f.as_r(), **values})
        prev_k = ds.run_dashboard_query(dw_db, "kpis", {**prev.as_r(), **values})
        assert prev_k["events"] > 0 and cur_k["events"] != prev_k["events"]
        for kpi in ("events", "sessions", "purchases"):
            want = (float(cur_k[kpi]) - float(prev_k[kpi])) / float(prev_k[kpi]) * 100
            assert _number(page.text_content(f"#kpi_delta_{kpi}") or "") == pytest.approx(want, abs=0.051)
        cmp_rows = {r[0]: r for r in _table(page, "cmp_table")}
        assert int(_number(cmp_rows["Events"][2])) == prev_k["events"]
        assert f"compared with {prev.date_from} to {prev.date_to}" in (
            page.text_content("#cmp_periods") or ""
        )
        page.wait_for_function(
            SHINY_IDLE_JS + " && document.querySelector('#cmp_plot img') !== null", timeout=60_000
        )
        page.screenshot(path=str(ARTIFACTS / "dashboard-comparison.png"), full_page=True)

        # Export: the channels CSV has the rows of the channels table, named by view and period.
        _open_tab(page, "Export")
        with page.expect_download() as info:
            page.click("#dl_channels")
        download = info.value
        assert download.suggested_filename == f"sbw-channels-{date_from}_{date_to}.csv"
        csv_path = tmp_path / download.suggested_filename
        download.save_as(csv_path)
        with csv_path.open(encoding="utf-8") as handle:
            csv_rows = list(csv.DictReader(handle))
        _open_tab(page, "Acquisition")
        table = _table(page, "acq_channels")
        assert [(r["value"], int(r["sessions"])) for r in csv_rows] == [
            (r[0], int(_number(r[1]))) for r in table
        ]
        _open_tab(page, "Export")
        with page.expect_download() as info:
            page.click("#dl_kpis")
        kpi_csv = tmp_path / "kpis.csv"
        info.value.save_as(kpi_csv)
        with kpi_csv.open(encoding="utf-8") as handle:
            kpi_rows = {r["kpi"]: r for r in csv.DictReader(handle)}
        assert float(kpi_rows["events"]["previous"]) == prev_k["events"]
        page.screenshot(path=str(ARTIFACTS / "dashboard-export.png"), full_page=True)

        # The bot toggle: bot sessions appear among the device classes.
        _open_tab(page, "Technology")
        before = page.text_content("#tech_devices") or ""
        page.click("#include_bots")
        page.wait_for_function(
            "(b) => document.getElementById('tech_devices').textContent !== b", arg=before, timeout=60_000
        )
        page.wait_for_function(SHINY_IDLE_JS, timeout=60_000)
        with_bots = dd.dimension_sessions(events, f, "device_class", include_bots=True)
        assert "bot" in with_bots
        assert _sessions_by_value(_table(page, "tech_devices")) == {
            k: v["sessions"] for k, v in with_bots.items()
        }
        _no_r_errors(page, log)
        assert errors == []
        # The demo's reader (sbw_ops.platform_observe) with the toggle: the KPI query with bots.
        url = f"http://127.0.0.1:{port}/"
        with_bots = ds.run_dashboard_query(dw_db, "kpis", {**f.as_r(), "include_bots": "true"})
        with ThreadPoolExecutor(1) as pool:  # its own Playwright: not in this thread's running one
            assert (
                pool.submit(observe.dashboard_kpis, url, None, 120_000, True).result()["events"]
                == (with_bots["events"])
            )
            assert pool.submit(observe.dashboard_kpis, url).result()["events"] == cur_k["events"]
    finally:
        app.kill()
        app.wait()
