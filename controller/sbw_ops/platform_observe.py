"""Reading what the platform holds, to show and to check it: the events in the raw bucket, the rows
and ETL bookkeeping of the warehouse (from inside the dwh host, as the dashboard user), and the
dashboard's KPI cards in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS, SHINY_IDLE_JS
from sbw_ops.platform_base import (
    DASHBOARD_PASSWORD_PARAM,
    WAREHOUSE_DB,
    PlatformConfig,
    PlatformState,
    host_pid,
    s3_client,
    ssm_secret,
)

# The dashboard's KPI cards (roles/sbw_dashboard/files/app/R/ui.R: #kpi_<name>).
KPI_IDS = (
    "events",
    "sessions",
    "users",
    "logged_in_users",
    "guest_visitors",
    "first_visits",
    "product_views",
    "add_to_carts",
    "purchases",
    "revenue",
    "conversion_rate",
)


def s3_event_ids(state: PlatformState) -> tuple[int, list[str]]:
    """(objects under events/, every event_id in them) of the raw bucket."""
    config = PlatformConfig.of(state)
    s3 = s3_client(config)
    bucket = state.data["raw_bucket"]
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    ids: list[str] = []
    lock = threading.Lock()

    def read(key: str) -> None:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        found = [json.loads(line)["event_id"] for line in body.splitlines() if line.strip()]
        with lock:
            ids.extend(found)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, keys))
    return len(keys), ids


_IN_DWH = """
import json, sys, psycopg2
conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname=sys.argv[1], user="sbw_dashboard",
                        password=sys.stdin.read(), connect_timeout=10)
with conn.cursor() as cur:
    cur.execute("SELECT event_id::text FROM clickstream_events")
    ids = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT status, count(*) FROM etl_runs GROUP BY status")
    runs = dict(cur.fetchall())
    cur.execute("SELECT status, count(*) FROM etl_objects GROUP BY status")
    objects = dict(cur.fetchall())
print(json.dumps({"event_ids": ids, "runs": runs, "objects": objects}))
"""


def warehouse(state: PlatformState) -> dict[str, Any]:
    """The warehouse as the dashboard user sees it (only from inside the dwh host: pg_hba):
    {"event_ids": [...], "runs": {status: n}, "objects": {status: n}}."""
    config = PlatformConfig.of(state)
    result = subprocess.run(
        [
            "nsenter",
            "--target",
            str(host_pid(config, "dwh")),
            "--net",
            sys.executable,
            "-c",
            _IN_DWH,
            WAREHOUSE_DB,
        ],
        input=ssm_secret(config, DASHBOARD_PASSWORD_PARAM),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot read the warehouse: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _number(text: str) -> float:
    cleaned = re.sub(r"[^0-9.\-]", "", text)
    return float(cleaned) if cleaned else float("nan")


# Counts the recalculations of the events tile, so that a reader can wait for the one a click
# starts (Shiny fires shiny:recalculated on the output even when the value stays the same; a
# jQuery event, so listened to with jQuery).
_COUNT_RECALCULATIONS_JS = """() => { window.__sbwKpiRuns = 0;
  jQuery(document).on('shiny:recalculated', (e) => {
    if (e.target && e.target.id === 'kpi_events') { window.__sbwKpiRuns += 1; } }); }"""


def dashboard_kpis(
    url: str, screenshot: Path | None = None, timeout_ms: int = 120_000, include_bots: bool = False
) -> dict[str, float]:
    """Open the dashboard in headless Chromium, wait (in real time) for Shiny, read the KPI cards,
    optionally save a full-page screenshot. conversion_rate as a fraction. The page excludes bot
    traffic by default; include_bots ticks its "Include bot traffic" box first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=timeout_ms)
            page.wait_for_function(
                SHINY_IDLE_JS + " && document.getElementById('kpi_events').textContent.length > 0",
                timeout=timeout_ms,
            )
            if include_bots:
                page.evaluate(_COUNT_RECALCULATIONS_JS)
                page.check("#include_bots")
                page.wait_for_function(SHINY_IDLE_JS + " && window.__sbwKpiRuns > 0", timeout=timeout_ms)
            values = {k: _number(page.text_content(f"#kpi_{k}") or "") for k in KPI_IDS}
            values["conversion_rate"] = values["conversion_rate"] / 100
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return values
