"""The event contract: schema, fast/complete validators agreeing, semantic rules, timestamps, key layout."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sbw_clickstream import contract, keys

# The columns of the seed's warehouse table clickstream_events (architecture walkthrough, 5.2.3).
SEED_COLUMNS = [
    "event_id",
    "event_timestamp",
    "event_name",
    "user_id",
    "user_login_state",
    "identity_source",
    "client_id",
    "session_id",
    "is_first_visit",
    "context_product_id",
    "context_product_name",
    "context_product_category",
    "context_product_brand",
    "context_product_price",
    "context_product_discount_price",
    "context_product_url_path",
]
# Contract v1.1 (additive): page, campaign and client context.
V1_1_COLUMNS = [
    "page_url",
    "page_path",
    "page_title",
    "page_referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "click_id_type",
    "screen",
    "viewport",
    "locale",
    "client_timezone",
]

VALID = {
    "event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "event_timestamp": "2026-11-25T10:15:30.123+07:00",
    "event_name": "add_to_cart",
    "user_id": "8c1f0a7e-cognito-sub",
    "user_login_state": "logged_in",
    "identity_source": "cognito",
    "client_id": "c-42",
    "session_id": "s-42-1",
    "is_first_visit": False,
    "context_product_id": "P-1001",
    "context_product_name": "Trail Running Shoe",
    "context_product_category": "Footwear",
    "context_product_brand": "Northpeak",
    "context_product_price": 89.9,
    "context_product_discount_price": 74.9,
    "context_product_url_path": "/products/p-1001",
}


def test_fields_are_the_warehouse_columns() -> None:
    assert list(contract.EVENT_FIELDS) == SEED_COLUMNS + V1_1_COLUMNS
    assert set(contract.REQUIRED_FIELDS) == {"event_timestamp", "event_name", "client_id", "session_id"}
    assert contract.ENRICHMENT_FIELDS == (
        "received_at",
        "schema_version",
        "user_agent",
        "client_ip",
        "client_event_timestamp",
        "ua_browser",
        "ua_browser_version",
        "ua_os",
        "ua_os_version",
        "device_class",
        "is_bot",
        "referrer_host",
        "traffic_source",
        "channel_group",
    )
    assert contract.EVENT_SCHEMA["additionalProperties"] is False
    assert contract.EVENT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_standard_event_names_match_the_pattern_and_are_documented() -> None:
    pattern = re.compile(contract.EVENT_SCHEMA["properties"]["event_name"]["pattern"])
    assert set(contract.STANDARD_EVENT_NAMES) == {
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "begin_checkout",
        "purchase",
        "search",
        "login",
        "logout",
        "sign_up",
    }
    for name in contract.STANDARD_EVENT_NAMES:
        assert pattern.fullmatch(name)
        assert name in contract.EVENT_SCHEMA["description"]


def test_full_valid_event_and_minimal_event_pass() -> None:
    assert contract.validate_event(VALID) == []
    minimal = {k: VALID[k] for k in contract.REQUIRED_FIELDS}
    assert contract.validate_event(minimal) == []
    nulls = {**minimal, **{k: None for k in SEED_COLUMNS if k not in minimal and k != "event_id"}}
    assert contract.validate_event(nulls) == []


@pytest.mark.parametrize(
    ("patch", "pointer", "fragment"),
    [
        ({"event_name": "page_view\n"}, "/event_name", "does not match"),
        ({"event_id": VALID["event_id"] + "\n"}, "/event_id", "does not match"),
        ({"event_timestamp": "2026-11-25T10:15:30Z\n"}, "/event_timestamp", "does not match"),
        ({"context_product_url_path": "/a\nb"}, "/context_product_url_path", "does not match"),
        ({"context_product_price": True}, "/context_product_price", "is not of type"),
        ({"is_first_visit": 1}, "/is_first_visit", "is not of type"),
        ({"extra": 1}, "", "Additional properties are not allowed"),
        ({"event_timestamp": "2026-02-30T10:00:00Z"}, "/event_timestamp", "not a valid RFC 3339"),
        ({"context_product_discount_price": 100}, "/context_product_discount_price", "greater than price"),
        ({"context_product_price": float("nan")}, "/context_product_price", "finite"),
        ({"client_id": "a\x00b"}, "/client_id", "NUL"),
        ({"context_product_name": "x\ud800"}, "/context_product_name", "lone surrogate"),
        ({"context_product_name": "n" * 257}, "/context_product_name", "is too long"),
    ],
)
def test_violations_name_the_field(patch: dict, pointer: str, fragment: str) -> None:
    found = contract.validate_event({**VALID, **patch}, 3)
    assert found, patch
    assert any(v.pointer == pointer and fragment in v.message for v in found), found
    assert all(v.index == 3 for v in found)


def test_every_violation_is_listed() -> None:
    event = {"event_name": "Bad", "client_id": "", "context_product_price": -1}
    pointers = {v.pointer for v in contract.validate_event(event, 0)}
    assert {"/event_name", "/client_id", "/context_product_price"} <= pointers
    assert any(
        "'event_timestamp' is a required property" in v.message for v in contract.validate_event(event)
    )


def test_validate_events_tags_indexes() -> None:
    found = contract.validate_events([VALID, {**VALID, "event_name": "X"}, 5])
    assert sorted({v.index for v in found}) == [1, 2]
    assert found[0].as_dict()["index"] == 1


def test_stored_event_requires_enrichment() -> None:
    stored = {
        **VALID,
        "received_at": "2026-11-25T03:15:31.000001Z",
        "schema_version": contract.SCHEMA_VERSION,
        "user_agent": "UA",
        "client_ip": "203.0.113.0",
    }
    assert contract.validate_stored_event(stored) == []
    assert contract.validate_event(stored)  # the client may not send enrichment fields
    missing = {k: v for k, v in stored.items() if k != "received_at"}
    assert any("received_at" in v.message for v in contract.validate_stored_event(missing))
    no_id = {k: v for k, v in stored.items() if k != "event_id"}
    assert any("event_id" in v.message for v in contract.validate_stored_event(no_id))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T10:15:30Z", datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-25t10:15:30z", datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-25T10:15:30.5+07:00", datetime(2026, 11, 25, 3, 15, 30, 500000, tzinfo=UTC)),
        ("2026-11-25T10:15:30.123456789-03:30", datetime(2026, 11, 25, 13, 45, 30, 123456, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = contract.parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_format_timestamp_round_trips_and_matches_the_schema() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    text = contract.format_timestamp(moment)
    assert text == "2026-01-02T01:04:05.000006Z"
    assert contract.parse_timestamp(text) == moment
    assert re.fullmatch(contract.EVENT_SCHEMA["properties"]["event_timestamp"]["pattern"], text)


def test_schema_file_is_valid_json_schema_2020_12() -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(contract.EVENT_SCHEMA)
    Draft202012Validator.check_schema(contract.STORED_EVENT_SCHEMA)
    assert json.loads(contract.SCHEMA_PATH.read_text()) == contract.EVENT_SCHEMA


# --- keys ----------------------------------------------------------------------------------------


def test_uuid7_layout_and_time_order() -> None:
    ids = [keys.uuid7(1_700_000_000_000 + i) for i in range(50)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert [str(u) for u in ids] == sorted(str(u) for u in ids)
    assert keys.uuid7_time(ids[0]) == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert len({keys.uuid7(1) for _ in range(100)}) == 100


def test_event_and_failed_keys_use_the_utc_day_of_receipt() -> None:
    oid = uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    late_evening_plus7 = datetime(2026, 11, 26, 2, 0, tzinfo=timezone(timedelta(hours=7)))  # 25th in UTC
    key = keys.event_key(late_evening_plus7, oid)
    assert key == f"events/2026/11/25/event-{oid}.json"
    assert keys.parse_event_key(key) == (date(2026, 11, 25), oid)
    assert keys.failed_key(late_evening_plus7, oid) == f"failed/2026/11/25/request-{oid}.json"
    assert keys.parse_event_key(f"failed/2026/11/25/request-{oid}.json") is None
    assert keys.parse_event_key(key.replace(".json", ".json.tmp")) is None
    assert keys.day_prefix(keys.EVENTS_PREFIX, date(2026, 1, 5)) == "events/2026/01/05/"


def test_format_timestamp_utc_or_in_the_moments_own_offset() -> None:
    singapore = timezone(timedelta(hours=8))
    moment = datetime(2024, 6, 1, 10, 0, 0, 123456, tzinfo=singapore)
    assert contract.format_timestamp(moment) == "2024-06-01T02:00:00.123456Z"
    assert contract.format_timestamp(moment, timespec="milliseconds") == "2024-06-01T02:00:00.123Z"
    assert (
        contract.format_timestamp(moment, utc=False, timespec="milliseconds")
        == "2024-06-01T10:00:00.123+08:00"
    )
    assert contract.parse_timestamp(contract.format_timestamp(moment, utc=False)) == moment
    with pytest.raises(ValueError, match="aware"):
        contract.format_timestamp(datetime(2024, 6, 1), utc=False)
