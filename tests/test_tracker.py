"""The browser tracker (clickstream.js) in REAL headless Chromium against the REAL local ingest API.

The sample shop is served from 127.0.0.1 on one port, the API listens on another (so every request is
cross-origin and goes through the handler's CORS), and the API writes to a moto S3 server. Events are
asserted where they land: in the bucket.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import esprima
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sbw_clickstream.contract import parse_timestamp, validate_stored_event
from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS

from tests.fixtures.moto import S3Bucket
from tests.service_support import local_api_process, stored_events

TRACKER_DIR = Path(__file__).resolve().parents[1] / "controller" / "sbw_ops" / "tracker"
DEMO_SUB = "0f8e2a52-6f61-4c8b-9d5c-3f1c2b9a7d10"  # the sample shop's fake Cognito user


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def shop_origin() -> Iterator[str]:
    """The tracker directory (sample pages + clickstream.js) served on 127.0.0.1, a free port."""
    handler = functools.partial(_QuietHandler, directory=str(TRACKER_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
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
def api_url(s3_bucket: S3Bucket, shop_origin: str, tmp_path: Path) -> Iterator[str]:
    with local_api_process(s3_bucket, tmp_path / "local_api.log", cors_origins=shop_origin) as url:
        yield url


def wait_for_events(bucket: S3Bucket, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the bucket until `count` events are stored (beacons are sent after the page is gone)."""
    deadline = time.monotonic() + timeout
    events = stored_events(bucket)
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        events = stored_events(bucket)
    # In the order they were tracked: the client's own time (ingest's clock-corrected event_timestamp
    # adds each request's transit time, which on a loaded machine can reorder events of two requests).
    return sorted(
        events, key=lambda e: parse_timestamp(e.get("client_event_timestamp") or e["event_timestamp"])
    )


def leave(page: Page) -> None:
    """Navigate away: pagehide + visibilitychange, the tracker's cue to deliver what is queued."""
    page.goto("about:blank")


def test_shopping_journey_lands_in_the_bucket(
    browser: Browser, shop_origin: str, api_url: str, s3_bucket
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{shop_origin}/sample/index.html?endpoint={api_url}&flush_ms=600000")  # page hides only
    page.click("#add-1002")
    page.click("#search")
    assert page.evaluate("clickstream.pending()") == 3  # batched: nothing sent yet
    client_id = page.evaluate("clickstream.clientId()")
    page.click("#open-1001")  # a real navigation: the index page is hidden, its batch goes out
    page.wait_for_url("**/sample/product.html")
    page.click("#login")
    page.click("#add")
    page.click("#buy")
    assert page.evaluate("clickstream.clientId()") == client_id
    leave(page)

    events = wait_for_events(s3_bucket, 8)
    names = [e["event_name"] for e in events]
    assert names == [
        "page_view",
        "add_to_cart",
        "search",
        "page_view",
        "product_view",
        "login",
        "add_to_cart",
        "purchase",
    ]
    assert len(s3_bucket.keys("events/")) == 2  # one batch per page
    for event in events:
        assert validate_stored_event(event) == [], event
        assert event["client_id"] == client_id
        assert event["is_first_visit"] is True
        assert parse_timestamp(event["event_timestamp"]).utcoffset() is not None
        assert "HeadlessChrome" in event["user_agent"] or "Chrome" in event["user_agent"]
    assert len({e["session_id"] for e in events}) == 1  # stable across pages

    by_name = {}
    for event in events:
        by_name.setdefault(event["event_name"], []).append(event)
    landing, product_page = by_name["page_view"]
    assert landing.get("context_product_id") is None  # the home page has no product
    assert landing["user_login_state"] == "guest" and landing["user_id"] is None
    assert landing["identity_source"] == "anonymous"
    guest_add, member_add = by_name["add_to_cart"]
    assert guest_add["context_product_id"] == "1002"
    assert guest_add["context_product_name"] == "Orion Everyday External SSD"
    assert guest_add["context_product_category"] == "Computers"
    assert guest_add["context_product_brand"] == "Orion"
    assert guest_add["context_product_price"] == 115.99
    assert guest_add.get("context_product_discount_price") is None
    assert guest_add["context_product_url_path"] == "/products/orion-everyday-external-ssd-1002"
    assert guest_add["user_login_state"] == "guest"
    for event in (product_page, by_name["product_view"][0], member_add, by_name["purchase"][0]):
        assert event["context_product_id"] == "1001"
        assert event["context_product_price"] == 329.49
        assert event["context_product_discount_price"] == 263.59
        assert event["context_product_url_path"] == "/products/voltex-premium-power-bank-1001"
    for event in (by_name["login"][0], member_add, by_name["purchase"][0]):
        assert event["user_id"] == DEMO_SUB
        assert event["user_login_state"] == "logged_in"
        assert event["identity_source"] == "cognito"
    assert product_page["user_login_state"] == "guest"  # before the login
    context.close()


def test_new_session_after_30_minutes_keeps_the_client(
    browser: Browser, shop_origin: str, api_url: str, s3_bucket
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{shop_origin}/sample/index.html?endpoint={api_url}")
    first_session = page.evaluate("clickstream.sessionId()")
    client_id = page.evaluate("clickstream.clientId()")
    # 31 minutes of inactivity (the stored last-activity time moved back), then a new page
    page.evaluate(
        "() => { const s = JSON.parse(localStorage.getItem('sbw_cs_session'));"
        " s.last = Date.now() - 31 * 60000; localStorage.setItem('sbw_cs_session', JSON.stringify(s)); }"
    )
    page.goto(f"{shop_origin}/sample/product.html")  # the endpoint is remembered by the sample shop
    second_session = page.evaluate("clickstream.sessionId()")
    leave(page)
    events = wait_for_events(s3_bucket, 3)
    assert [(e["event_name"], e["session_id"], e["is_first_visit"]) for e in events] == [
        ("page_view", first_session, True),
        ("page_view", second_session, False),
        ("product_view", second_session, False),
    ]
    assert first_session != second_session
    assert {e["client_id"] for e in events} == {client_id}
    context.close()


def test_batches_flush_by_size_by_time_and_on_navigation(
    browser: Browser, shop_origin: str, api_url: str, s3_bucket
) -> None:
    context = browser.new_context()
    page = context.new_page()
    # size: with a long interval, the 10th queued event (page_view + 9) flushes, the page still open
    page.goto(f"{shop_origin}/sample/index.html?endpoint={api_url}&flush_ms=600000")
    page.evaluate(
        "for (let n = 0; n < 9; n++) clickstream.track('add_to_cart', {product: {id: 'p' + n, price: n}})"
    )
    events = wait_for_events(s3_bucket, 10)
    assert len(events) == 10 and len(s3_bucket.keys("events/")) == 1
    assert page.evaluate("clickstream.pending()") == 0
    # time: a page whose interval is 1.5 s sends its lone page_view by itself, the page still open
    page.goto(f"{shop_origin}/sample/index.html?flush_ms=1500")
    events = wait_for_events(s3_bucket, 11, timeout=20)
    assert events[-1]["event_name"] == "page_view" and len(s3_bucket.keys("events/")) == 2
    assert page.evaluate("clickstream.pending()") == 0
    # client-side navigation (Next.js router: history.pushState) is a page view
    page.evaluate(
        "() => { history.pushState({}, '', '/sample/cart'); return new Promise(r => setTimeout(r, 50)); }"
    )
    leave(page)
    events = wait_for_events(s3_bucket, 12)
    assert events[-1]["event_name"] == "page_view"
    assert {e["session_id"] for e in events} == {events[0]["session_id"]}
    context.close()


def test_cookie_fallback_when_local_storage_is_blocked(
    browser: Browser, shop_origin: str, api_url: str, s3_bucket
) -> None:
    context = browser.new_context()
    # Storage that refuses writes (private modes, full quota): the ids must live in cookies.
    context.add_init_script(
        "const setItem = Storage.prototype.setItem;"
        " Storage.prototype.setItem = function (k, v) {"
        "  if (this === window.localStorage) throw new Error('blocked'); return setItem.call(this, k, v); };"
    )
    page = context.new_page()
    page.goto(f"{shop_origin}/sample/index.html?endpoint={api_url}")
    client_id = page.evaluate("clickstream.clientId()")
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    assert cookies["sbw_cs_cid"] == client_id
    page.goto(f"{shop_origin}/sample/product.html?endpoint={api_url}")
    assert page.evaluate("clickstream.clientId()") == client_id
    leave(page)
    events = wait_for_events(s3_bucket, 3)
    assert [e["event_name"] for e in events] == ["page_view", "page_view", "product_view"]
    assert {e["client_id"] for e in events} == {client_id}
    assert len({e["session_id"] for e in events}) == 1
    assert all(e["is_first_visit"] is True for e in events)
    context.close()


def test_identity_from_cognito_tokens(browser: Browser, shop_origin: str, api_url: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{shop_origin}/sample/index.html?endpoint={api_url}")

    def token(claims: dict[str, Any]) -> str:
        return page.evaluate(
            "(claims) => { const b = (s) => btoa(unescape(encodeURIComponent(s)))"
            ".replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');"
            " return b('{\"alg\":\"RS256\"}') + '.' + b(JSON.stringify(claims)) + '.sig'; }",
            claims,
        )

    key = "CognitoIdentityServiceProvider.demo-app-client.someone.idToken"
    now = int(time.time())
    cases = [
        ({"sub": "abc-1", "exp": now + 600, "name": "Nguyễn Văn A"}, "logged_in", "abc-1"),
        ({"sub": "abc-2", "exp": now - 60}, "guest", None),  # expired
        ({"email": "no-sub@example.com", "exp": now + 600}, "guest", None),
    ]
    for claims, state, user in cases:
        page.evaluate("([k, v]) => localStorage.setItem(k, v)", [key, token(claims)])
        identity = page.evaluate("clickstream.identity()")
        assert identity["user_login_state"] == state, claims
        assert identity["user_id"] == user
        assert identity["identity_source"] == ("cognito" if user else "anonymous")
    # a token of another app client is not ours
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [key, token(cases[1][0])])
    other = "CognitoIdentityServiceProvider.other-client.x.idToken"
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [other, token(cases[0][0])])
    assert page.evaluate("clickstream.identity()")["user_login_state"] == "guest"
    # Amplify's cookie storage (Next.js SSR) works too
    page.evaluate("() => localStorage.clear()")
    context.add_cookies(
        [{"name": key, "value": token({"sub": "cookie-user", "exp": now + 600}), "url": shop_origin}]
    )
    assert page.evaluate("clickstream.identity()")["user_id"] == "cookie-user"
    # bad input never reaches the API: invalid names are dropped, a discount above the price too
    assert page.evaluate("clickstream.track('Bad Name')") is None
    event = page.evaluate(
        "clickstream.track('add_to_cart',"
        " {product: {id: 'x1', price: 10, discount_price: 12, url_path: 'no-slash'}})"
    )
    assert event["context_product_discount_price"] is None
    assert event["context_product_url_path"] is None
    assert event["context_product_price"] == 10
    context.close()


def test_tracker_is_small_dependency_free_es2017() -> None:
    source = (TRACKER_DIR / "clickstream.js").read_text(encoding="utf-8")
    assert len(source.encode()) < 34_000  # v1.1 page context, consent, query stripping: ~31 KB
    # esprima parses ECMAScript 2017 and rejects later syntax (optional chaining, ?? ...); it does
    # accept object spread (ES2018), so spread is checked on the tokens
    tree = esprima.parseScript(source)
    assert len(tree.body) == 1  # one IIFE, nothing leaked to the global scope but `clickstream`
    tokens = esprima.tokenize(source)
    assert "..." not in {t.value for t in tokens if t.type == "Punctuator"}
    assert not {t.value for t in tokens if t.type == "Identifier"} & {"require", "exports", "define"}
    for helper in (TRACKER_DIR / "sample" / "shop.js",):
        esprima.parseScript(helper.read_text(encoding="utf-8"))


def test_sample_pages_load_the_tracker_and_mark_products() -> None:
    index = (TRACKER_DIR / "sample" / "index.html").read_text(encoding="utf-8")
    product = (TRACKER_DIR / "sample" / "product.html").read_text(encoding="utf-8")
    for html in (index, product):
        assert '<script src="../clickstream.js"></script>' in html
    assert index.count("data-product-id=") == 3 and "data-product-page" not in index
    assert product.count("data-product-page") == 2  # the attribute and the comment explaining it
