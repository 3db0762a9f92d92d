"""Tracker contract v1.1 in REAL headless Chromium against the REAL local ingest API (moto S3): page,
campaign and client context on every event, SPA route changes as page views, query secrets stripped
(configurable allow-list), the consent switch and Do-Not-Track. Events are asserted where they land:
in the bucket, enriched by ingest (user agent, channel)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sbw_clickstream.contract import validate_stored_event
from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS

from tests.fixtures.moto import S3Bucket
from tests.service_support import local_api_process, stored_events
from tests.test_tracker import wait_for_events

TRACKER = Path(__file__).resolve().parents[1] / "controller" / "sbw_ops" / "tracker" / "clickstream.js"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Home | Shop</title></head>
<body>
<main data-product-page data-product-id="P-1" data-product-name="Shoe" data-product-price="10"></main>
<script src="/clickstream.js"></script>
<script>
  const options = {endpoint: window.__endpoint, flushInterval: 600000};
  clickstream.init(Object.assign(options, window.__options || {}));
</script>
</body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A page that loads the tracker (init options from the test) served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("tracker-site")
    shutil.copy(TRACKER, root / "clickstream.js")
    (root / "app.html").write_text(PAGE.replace('data-product-page data-product-id="P-1" ', ""))
    (root / "product.html").write_text(PAGE)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def api_url(s3_bucket: S3Bucket, origin: str, tmp_path: Path) -> Iterator[str]:
    with local_api_process(s3_bucket, tmp_path / "local_api.log", cors_origins=origin) as url:
        yield url


def _context(
    browser: Browser, api_url: str, options: dict[str, Any] | None = None, **kwargs: Any
) -> BrowserContext:
    context = browser.new_context(**kwargs)
    context.add_init_script(
        f"window.__endpoint = {json.dumps(api_url)}; window.__options = {json.dumps(options or {})};"
    )
    return context


def _api_requests(page: Page, api_url: str) -> list[str]:
    seen: list[str] = []
    page.on(
        "request", lambda request: seen.append(request.method) if request.url.startswith(api_url) else None
    )
    return seen


def test_page_campaign_and_client_context_on_every_event(
    browser: Browser, origin: str, api_url: str, s3_bucket: S3Bucket
) -> None:
    context = _context(
        browser,
        api_url,
        viewport={"width": 1280, "height": 720},
        screen={"width": 1920, "height": 1080},
        locale="en-SG",
        timezone_id="Asia/Singapore",
    )
    page = context.new_page()
    query = (
        "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_term=shoes&utm_content=hero"
        "&gclid=SECRETCLICKID&token=abc123&q=running+shoes&email=ann%40example.com&color=red"
    )
    page.goto(
        f"{origin}/product.html?{query}#access_token=FRAGMENTSECRET",
        referer="https://www.google.com/search?q=shoes&pwd=hunter2",
    )
    assert page.evaluate("clickstream.version") == "1.1.0"
    page.evaluate("clickstream.track('add_to_cart', {element: document.querySelector('main')})")
    page.evaluate("clickstream.flush()")
    events = wait_for_events(s3_bucket, 3)
    assert [e["event_name"] for e in events] == ["page_view", "product_view", "add_to_cart"]
    kept = "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_term=shoes&utm_content=hero"
    for event in events:
        assert validate_stored_event(event) == [], event
        assert event["page_url"] == f"{origin}/product.html?{kept}&q=running+shoes&color=red"
        assert event["page_path"] == "/product.html" and event["page_title"] == "Home | Shop"
        assert event["page_referrer"].startswith("https://www.google.com/")
        assert "hunter2" not in event["page_referrer"]
        assert (event["utm_source"], event["utm_medium"], event["utm_campaign"]) == (
            "newsletter",
            "email",
            "spring_sale",
        )
        assert (event["utm_term"], event["utm_content"], event["click_id_type"]) == ("shoes", "hero", "gclid")
        assert (event["screen"], event["viewport"]) == ("1920x1080", "1280x720")
        assert (event["locale"], event["client_timezone"]) == ("en-SG", "Asia/Singapore")
        # enriched by ingest from the request: Chromium's own User-Agent header; gclid = a paid click
        assert event["ua_browser"] in ("Chrome", "HeadlessChrome") and event["device_class"] == "desktop"
        assert event["is_bot"] is False and event["ua_os"] == "Linux"
        assert (event["referrer_host"], event["traffic_source"], event["channel_group"]) == (
            "www.google.com",
            "newsletter",
            "Paid Search",
        )
    text = json.dumps(stored_events(s3_bucket))
    for secret in ("SECRETCLICKID", "abc123", "ann@example.com", "FRAGMENTSECRET", "hunter2"):
        assert secret not in text
    context.close()


def test_spa_route_changes_are_page_views_with_the_previous_page_as_referrer(
    browser: Browser, origin: str, api_url: str, s3_bucket: S3Bucket
) -> None:
    context = _context(browser, api_url)
    page = context.new_page()
    page.goto(f"{origin}/app.html")
    page.evaluate("history.pushState({}, '', '/category/shoes')")
    page.evaluate("document.title = 'Product'; history.pushState({}, '', '/product/p-1?session=xyz&size=9')")
    page.evaluate("history.replaceState({scroll: 10}, '', location.href)")  # same URL: no page view
    page.evaluate("history.replaceState({}, '', '/product/p-1?size=10')")
    page.evaluate("history.back()")
    page.wait_for_url("**/category/shoes")
    page.wait_for_function("clickstream.pending() === 5")
    page.evaluate("clickstream.flush()")
    events = wait_for_events(s3_bucket, 5)
    assert [e["event_name"] for e in events] == ["page_view"] * 5
    assert [e["page_url"].removeprefix(origin) for e in events] == [
        "/app.html",
        "/category/shoes",
        "/product/p-1?size=9",
        "/product/p-1?size=10",
        "/category/shoes",
    ]
    assert [e["page_path"] for e in events] == [
        "/app.html",
        "/category/shoes",
        "/product/p-1",
        "/product/p-1",
        "/category/shoes",
    ]
    assert [(e["page_referrer"] or "").removeprefix(origin) for e in events] == [
        "",
        "/app.html",
        "/category/shoes",
        "/product/p-1?size=9",
        "/product/p-1?size=10",
    ]
    assert [e["channel_group"] for e in events] == ["Direct"] + ["Internal"] * 4
    assert events[2]["page_title"] == "Product"
    assert len({e["session_id"] for e in events}) == 1
    context.close()


def test_secret_looking_query_parameters_are_stripped_and_the_lists_are_configurable(
    browser: Browser, origin: str, api_url: str, s3_bucket: S3Bucket
) -> None:
    secrets = (
        "access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig&sessionId=S1&apiKey=K1&userEmail=E1"
        "&password=P1&auth=A1&code=C1&otp=123456&ref=bob%40example.org&fbclid=F1&msclkid=M1"
    )
    context = _context(browser, api_url, {"allowedQueryParams": ["promo_code"]})
    page = context.new_page()
    page.goto(f"{origin}/app.html?q=shoes&{secrets}&promo_code=SPRING&page=2")
    page.evaluate("clickstream.flush()")
    (event,) = wait_for_events(s3_bucket, 1)
    assert event["page_url"] == f"{origin}/app.html?q=shoes&promo_code=SPRING&page=2"
    assert event["click_id_type"] == "fbclid"  # the first click id of the URL; no value stored
    assert event["channel_group"] == "Organic Social"  # fbclid: Meta adds it to organic links too
    context.close()

    # A shop's own deny-list replaces the default one; the allow-list still wins over it.
    context = _context(browser, api_url, {"deniedQueryParams": ["color"], "allowedQueryParams": ["colorway"]})
    page = context.new_page()
    page.goto(f"{origin}/app.html?color=red&colorway=blue&token=T1&size=9")
    page.evaluate("clickstream.flush()")
    events = wait_for_events(s3_bucket, 2)
    assert events[1]["page_url"] == f"{origin}/app.html?colorway=blue&token=T1&size=9"
    context.close()


def test_require_consent_tracks_stores_and_sends_nothing_until_consent(
    browser: Browser, origin: str, api_url: str, s3_bucket: S3Bucket
) -> None:
    context = _context(browser, api_url, {"requireConsent": True})
    page = context.new_page()
    sent = _api_requests(page, api_url)
    page.goto(f"{origin}/product.html?utm_source=ad")
    assert page.evaluate("clickstream.track('add_to_cart')") is None
    page.evaluate("clickstream.pageView(); clickstream.flush()")
    assert page.evaluate("[clickstream.pending(), clickstream.unanswered(), clickstream.enabled()]") == [
        0,
        0,
        False,
    ]
    assert page.evaluate("clickstream.clientId()") is None
    assert page.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))") == []
    assert context.cookies() == []
    page.reload()  # another page of the visit, still without consent
    page.evaluate("clickstream.flush()")
    time.sleep(0.5)  # a request would have been issued by flush() already; give it time to show
    assert [m for m in sent if m == "POST"] == [] and stored_events(s3_bucket) == []

    assert page.evaluate("clickstream.consent(true)") is True  # this page's views, then what follows
    page.evaluate("clickstream.track('add_to_cart', {element: document.querySelector('main')})")
    page.evaluate("clickstream.flush()")
    events = wait_for_events(s3_bucket, 3)
    assert [e["event_name"] for e in events] == ["page_view", "product_view", "add_to_cart"]
    assert events[0]["utm_source"] == "ad" and page.evaluate("clickstream.clientId()") is not None

    page.evaluate("clickstream.consent(false)")  # withdrawn: nothing more, the queue forgotten
    assert page.evaluate("clickstream.track('purchase')") is None
    assert page.evaluate("[clickstream.pending(), clickstream.unanswered()]") == [0, 0]
    context.close()


DNT = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"


def test_do_not_track_is_honoured_when_configured(
    browser: Browser, origin: str, api_url: str, s3_bucket: S3Bucket
) -> None:
    context = _context(browser, api_url, {"respectDoNotTrack": True})
    context.add_init_script(DNT)
    page = context.new_page()
    sent = _api_requests(page, api_url)
    page.goto(f"{origin}/app.html")
    assert page.evaluate("navigator.doNotTrack") == "1"
    assert page.evaluate("clickstream.track('add_to_cart')") is None
    page.evaluate("clickstream.consent(true); clickstream.flush()")  # Do-Not-Track wins over consent
    assert page.evaluate("[clickstream.pending(), clickstream.enabled()]") == [0, False]
    assert page.evaluate("Object.keys(localStorage)") == []
    time.sleep(0.5)
    assert [m for m in sent if m == "POST"] == [] and stored_events(s3_bucket) == []
    context.close()

    # Without respectDoNotTrack the same browser is tracked (the shop's choice, off by default).
    context = _context(browser, api_url)
    context.add_init_script(DNT)
    page = context.new_page()
    page.goto(f"{origin}/app.html")
    page.evaluate("clickstream.flush()")
    assert [e["event_name"] for e in wait_for_events(s3_bucket, 1)] == ["page_view"]
    context.close()
