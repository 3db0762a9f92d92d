"""Contract v1.1 (additive): 1.0 events stay valid, the new page/campaign/client fields are checked,
ingest derives the user-agent and traffic fields from the request (a client's value for them is
overwritten), and an event with v1.1 fields and a User-Agent header reaches the warehouse columns
(V030) through the real handler, the raw bucket (moto) and the real ETL (PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sbw_clickstream import contract, keys
from sbw_clickstream.etl import run_etl

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.ingest_support import apigw_event, call, configure, valid_event
from tests.test_etl_support import connector, etl_config

V1_1 = {
    "page_url": "https://shop.example/product/p-1?utm_source=newsletter&utm_medium=email&color=red",
    "page_path": "/product/p-1",
    "page_title": "Trail Running Shoe | Shop",
    "page_referrer": "https://mail.google.com/",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "spring_sale",
    "utm_term": "running shoes",
    "utm_content": "hero_banner",
    "click_id_type": "gclid",
    "screen": "1920x1080",
    "viewport": "1280x720",
    "locale": "en-SG",
    "client_timezone": "Asia/Singapore",
}
PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)


def _base() -> dict[str, Any]:
    return {
        "event_timestamp": "2026-11-25T10:15:30.123+08:00",
        "event_name": "page_view",
        "client_id": "c-1",
        "session_id": "s-1",
    }


def test_a_1_0_event_is_a_valid_1_1_event() -> None:
    assert contract.SCHEMA_VERSION == "1.1.0"
    old = {**_base(), "context_product_id": "P-1", "context_product_price": 10.0}
    assert contract.validate_event(old) == []
    assert contract.validate_event({**old, **{name: None for name in V1_1}}) == []


def test_a_1_1_event_with_every_new_field_is_valid() -> None:
    assert contract.validate_event({**_base(), **V1_1}) == []


@pytest.mark.parametrize(
    ("patch", "pointer"),
    [
        ({"page_path": "product/p-1"}, "/page_path"),
        ({"page_path": "/a\nb"}, "/page_path"),
        ({"page_url": "https://shop.example/\u0007"}, "/page_url"),
        ({"page_url": "https://shop.example/" + "a" * 2048}, "/page_url"),
        ({"page_title": "t" * 513}, "/page_title"),
        ({"utm_source": ""}, "/utm_source"),
        ({"utm_campaign": "c" * 257}, "/utm_campaign"),
        ({"click_id_type": "GCLID=abc123"}, "/click_id_type"),
        ({"screen": "1920*1080"}, "/screen"),
        ({"viewport": 1280}, "/viewport"),
        ({"locale": "en_SG"}, "/locale"),
        ({"client_timezone": "Asia/Singapore; DROP"}, "/client_timezone"),
        ({"page_referrer": 42}, "/page_referrer"),
    ],
)
def test_bad_v1_1_values_are_refused_naming_the_field(patch: dict[str, Any], pointer: str) -> None:
    violations = contract.validate_event({**_base(), **V1_1, **patch})
    assert [v.pointer for v in violations] == [pointer]


def test_the_enriched_fields_are_not_client_fields() -> None:
    assert not contract.REQUEST_DERIVED_FIELDS & set(contract.EVENT_FIELDS)
    assert set(contract.ENRICHMENT_FIELDS) >= contract.REQUEST_DERIVED_FIELDS
    stored = {
        **_base(),
        "event_id": str(keys.uuid7()),
        "received_at": "2026-11-25T02:15:31.000000Z",
        "schema_version": "1.1.0",
        "is_bot": "yes",
    }
    assert [v.pointer for v in contract.validate_stored_event(stored)] == ["/is_bot"]
    assert [
        v.pointer
        for v in contract.validate_stored_event({**stored, "is_bot": False, "channel_group": "Social"})
    ] == ["/channel_group"]


def _stored(bucket: S3Bucket) -> list[dict[str, Any]]:
    return [json.loads(line) for key in bucket.keys("events/") for line in bucket.read(key).splitlines()]


def _now_event(**patch: Any) -> dict[str, Any]:
    moment = datetime.now(UTC) - timedelta(seconds=20)
    return valid_event(event_id=str(keys.uuid7()), event_timestamp=contract.format_timestamp(moment), **patch)


def test_ingest_derives_the_request_fields_and_overwrites_client_values(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    forged = {
        "is_bot": False,
        "ua_browser": "Lynx",
        "device_class": "desktop",
        "channel_group": "Direct",
        "traffic_source": "(direct)",
        "referrer_host": "evil.test",
    }
    human = _now_event(**V1_1, **forged)
    status, _, body = call(apigw_event(json.dumps(human), user_agent=PIXEL))
    assert status == 200, body
    (row,) = _stored(s3_bucket)
    assert {k: row[k] for k in V1_1} == V1_1  # client context kept as sent
    assert {k: row[k] for k in sorted(contract.REQUEST_DERIVED_FIELDS)} == {
        "channel_group": "Paid Search",  # gclid: a paid click, whatever the email tag says
        "device_class": "mobile",
        "is_bot": False,
        "referrer_host": "mail.google.com",
        "traffic_source": "newsletter",
        "ua_browser": "Chrome",
        "ua_browser_version": "126",
        "ua_os": "Android",
        "ua_os_version": "14",
    }
    assert row["user_agent"] == PIXEL and not contract.validate_stored_event(row)

    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    status, _, _ = call(
        apigw_event(json.dumps(_now_event(is_bot=False, page_url="https://shop.example/")), user_agent=bot)
    )
    assert status == 200
    crawled = next(r for r in _stored(s3_bucket) if r["user_agent"] == bot)
    assert (crawled["is_bot"], crawled["device_class"], crawled["ua_browser"]) == (True, "bot", "Googlebot")
    assert (crawled["traffic_source"], crawled["channel_group"]) == ("(direct)", "Direct")


def test_v1_1_event_and_user_agent_load_into_the_warehouse_columns(
    dw_db: PgDatabase, s3_bucket: S3Bucket
) -> None:
    configure(s3_bucket)
    event = _now_event(**{**V1_1, "click_id_type": None})
    old = _now_event()  # a 1.0 event from an old tracker, in the same warehouse
    assert call(apigw_event(json.dumps({"events": [event, old]}), user_agent=PIXEL))[0] == 200
    config = etl_config(dw_db, s3_bucket.name)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["status"] == "succeeded" and summary["rows_inserted"] == 2
    assert summary["fields_kept_in_extra"] == {}  # every v1.1 field has its column (V030)
    columns = [*V1_1, *sorted(contract.REQUEST_DERIVED_FIELDS), "extra"]
    rows = dw_db.query(
        f"SELECT event_id::text, {', '.join(columns)} FROM clickstream_events ORDER BY event_id"
    )
    loaded = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}
    new = loaded[event["event_id"]]
    assert {k: new[k] for k in V1_1} == {**V1_1, "click_id_type": None}
    assert {k: new[k] for k in sorted(contract.REQUEST_DERIVED_FIELDS)} == {
        "channel_group": "Email",
        "device_class": "mobile",
        "is_bot": False,
        "referrer_host": "mail.google.com",
        "traffic_source": "newsletter",
        "ua_browser": "Chrome",
        "ua_browser_version": "126",
        "ua_os": "Android",
        "ua_os_version": "14",
    }
    assert new["extra"] is None
    legacy = loaded[old["event_id"]]
    assert all(legacy[k] is None for k in V1_1)
    assert (legacy["ua_browser"], legacy["is_bot"], legacy["channel_group"]) == ("Chrome", False, None)


def test_a_stored_event_of_an_older_ingest_loads_with_is_bot_false(
    dw_db: PgDatabase, s3_bucket: S3Bucket
) -> None:
    moment = datetime.now(UTC) - timedelta(minutes=5)
    stored = {
        "event_id": str(keys.uuid7()),
        "event_timestamp": contract.format_timestamp(moment),
        "event_name": "page_view",
        "client_id": "c-9",
        "session_id": "s-9",
        "received_at": contract.format_timestamp(moment),
        "schema_version": "1.0.0",
        "user_agent": PIXEL,
        "client_ip": "203.0.113.0",
    }
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key=keys.event_key(moment, keys.uuid7()), Body=json.dumps(stored).encode()
    )
    config = etl_config(dw_db, s3_bucket.name)
    assert run_etl(config, s3_bucket.client, connector(config))["rows_inserted"] == 1
    assert dw_db.query("SELECT is_bot, device_class, ua_browser FROM clickstream_events") == [
        (False, None, None)
    ]
