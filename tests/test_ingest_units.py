"""Plain functions of ingest: configuration, decoding, parsing, time window, enrichment, serialisation."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from sbw_clickstream import contract, ingest, keys
from sbw_clickstream.ingest import IngestRequest, RequestRejectedError
from sbw_clickstream.ingest_config import ConfigError, IngestConfig, load_config

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
CONFIG = IngestConfig(raw_bucket="clickstream-s3-ingest", region="ap-southeast-1")
EVENT = {
    "event_timestamp": "2026-11-25T11:59:00Z",
    "event_name": "page_view",
    "client_id": "c",
    "session_id": "s",
}


def request(body: str | None, **kw: object) -> IngestRequest:
    fields: dict = {"method": "POST", "path": "/clickstream", "headers": {"content-type": "application/json"}}
    fields.update(kw)
    return IngestRequest(body=body, **fields)


# --- configuration -------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = load_config({"RAW_BUCKET": "clickstream-s3-ingest", "AWS_REGION": "ap-southeast-1"})
    assert cfg == CONFIG
    assert cfg.max_event_age == timedelta(days=7)
    assert cfg.max_future_skew == timedelta(minutes=5)
    assert cfg.failed_records is True


@pytest.mark.parametrize(
    ("patch", "variable"),
    [
        ({"RAW_BUCKET": None}, "RAW_BUCKET"),
        ({"RAW_BUCKET": "Bad_Bucket"}, "RAW_BUCKET"),
        ({"AWS_REGION": None}, "AWS_REGION"),
        ({"AWS_REGION": "singapore"}, "AWS_REGION"),
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
        ({"MAX_BODY_BYTES": "2000000"}, "MAX_BODY_BYTES"),
        ({"MAX_EVENTS_PER_REQUEST": "0"}, "MAX_EVENTS_PER_REQUEST"),
        ({"MAX_EVENT_AGE_HOURS": "-1"}, "MAX_EVENT_AGE_HOURS"),
        ({"MAX_FUTURE_SKEW_SECONDS": "9999"}, "MAX_FUTURE_SKEW_SECONDS"),
        ({"FAILED_RECORDS": "maybe"}, "FAILED_RECORDS"),
        ({"CORS_ALLOW_ORIGINS": "shop.example"}, "CORS_ALLOW_ORIGINS"),
        ({"INGEST_PATH": "clickstream"}, "INGEST_PATH"),
        ({"S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
    ],
)
def test_config_errors_name_the_variable(patch: dict, variable: str) -> None:
    env = {"RAW_BUCKET": "clickstream-s3-ingest", "AWS_REGION": "ap-southeast-1", **patch}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError, match=variable):
        load_config(env)


def test_config_switches_and_origins() -> None:
    cfg = load_config(
        {
            "RAW_BUCKET": "b-1",
            "AWS_REGION": "us-east-1",
            "FAILED_RECORDS": "off",
            "CORS_ALLOW_ORIGINS": "https://shop.example, http://localhost:3000/",
            "MAX_EVENT_AGE_HOURS": "24",
        }
    )
    assert cfg.failed_records is False
    assert cfg.cors_allow_origins == ("https://shop.example", "http://localhost:3000")
    assert cfg.max_event_age == timedelta(hours=24)


# --- decoding --------------------------------------------------------------------------------------


def test_content_type_rules() -> None:
    assert ingest.check_content_type({"content-type": "application/json"}) is False
    assert ingest.check_content_type({"content-type": "Application/JSON; charset=UTF-8"}) is False
    assert ingest.check_content_type({"content-type": "application/json", "content-encoding": "gzip"}) is True
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/json; charset=utf-16"}):
        with pytest.raises(RequestRejectedError) as err:
            ingest.check_content_type(headers)
        assert err.value.status == 415


def test_decode_plain_base64_and_gzip() -> None:
    raw = json.dumps(EVENT).encode()
    assert ingest.decode_body(request(raw.decode()), False, 1000) == raw
    b64 = base64.b64encode(raw).decode()
    assert ingest.decode_body(request(b64, is_base64_encoded=True), False, 1000) == raw
    gz = base64.b64encode(gzip.compress(raw)).decode()
    assert ingest.decode_body(request(gz, is_base64_encoded=True), True, 1000) == raw


def test_size_limits_are_on_decoded_bytes() -> None:
    raw = json.dumps({**EVENT, "context_product_name": "x" * 200}).encode()
    limit = len(raw) - 1
    with pytest.raises(RequestRejectedError) as err:
        ingest.decode_body(request(raw.decode()), False, limit)
    assert err.value.status == 413
    # gzip makes it small on the wire, but the limit applies after gunzip
    small = base64.b64encode(gzip.compress(raw)).decode()
    assert len(small) < limit
    with pytest.raises(RequestRejectedError) as err:
        ingest.decode_body(request(small, is_base64_encoded=True), True, limit)
    assert err.value.status == 413
    assert ingest.decode_body(request(raw.decode()), False, len(raw)) == raw


def test_gzip_bomb_is_stopped_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)
    with pytest.raises(RequestRejectedError) as err:
        ingest.gunzip_limited(bomb, 1024 * 1024)
    assert err.value.status == 413


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_single_and_batch() -> None:
    assert ingest.events_of_body(json.dumps(EVENT).encode(), 500) == ([EVENT], False)
    assert ingest.events_of_body(json.dumps({"events": [EVENT, EVENT]}).encode(), 500) == (
        [EVENT, EVENT],
        True,
    )
    with pytest.raises(RequestRejectedError) as err:
        ingest.events_of_body(json.dumps({"events": [EVENT] * 3}).encode(), 2)
    assert err.value.status == 413
    with pytest.raises(RequestRejectedError, match="NaN"):
        ingest.events_of_body(b'{"a": NaN}', 500)
    with pytest.raises(RequestRejectedError) as err:
        ingest.events_of_body(b'{"events": [], "x/y~": 1}', 500)
    assert [v.pointer for v in err.value.violations] == ["/x~1y~0"]


# --- validation of a request -----------------------------------------------------------------------


def test_time_window_boundaries() -> None:
    def at(delta: timedelta) -> dict:
        return {**EVENT, "event_timestamp": contract.format_timestamp(NOW + delta)}

    ok = [at(timedelta(minutes=5)), at(-timedelta(days=7)), at(timedelta(0))]
    assert ingest.validate_batch(ok, NOW, CONFIG) == []
    bad = [at(timedelta(minutes=5, seconds=1)), at(-timedelta(days=7, seconds=1))]
    found = ingest.validate_batch(bad, NOW, CONFIG)
    assert [(v.index, v.pointer) for v in found] == [(0, "/event_timestamp"), (1, "/event_timestamp")]
    assert "300 s in the future" in found[0].message
    assert "168 h" in found[1].message


def test_duplicate_event_ids_in_one_request_are_rejected() -> None:
    eid = str(keys.uuid7())
    found = ingest.validate_batch(
        [{**EVENT, "event_id": eid}, {**EVENT, "event_id": eid.upper()}], NOW, CONFIG
    )
    assert [(v.index, v.pointer) for v in found] == [(1, "/event_id")]


# --- enrichment ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("not-an-ip", None),
        (None, None),
        ("", None),
    ],
)
def test_truncate_ip(ip: str | None, expected: str | None) -> None:
    assert ingest.truncate_ip(ip) == expected


def test_enrichment_derives_and_keeps() -> None:
    ctx = ingest.request_context(request("{}", source_ip="198.51.100.23", user_agent="UA/" + "x" * 600), NOW)
    assert ctx.received_at == "2026-11-25T12:00:00.000000Z"
    assert ctx.client_ip == "198.51.100.0"
    assert ctx.user_agent is not None and len(ctx.user_agent) == ingest.MAX_USER_AGENT_CHARS

    guest = ingest.enrich_event(dict(EVENT), ctx)
    assert guest["user_login_state"] == "guest" and guest["identity_source"] == "anonymous"
    assert uuid_version(guest["event_id"]) == 7
    member = ingest.enrich_event({**EVENT, "user_id": "u-1", "user_login_state": None}, ctx)
    assert member["user_login_state"] == "logged_in" and member["identity_source"] == "cognito"
    sent = {
        **EVENT,
        "user_id": "u-1",
        "user_login_state": "guest",
        "identity_source": "google",
        "event_id": "X",
    }
    kept = ingest.enrich_event(sent, ctx)
    assert {k: kept[k] for k in sent} == sent
    assert kept["schema_version"] == contract.SCHEMA_VERSION
    # client_event_timestamp only when the batch carried sent_at (test_clock_correction...)
    assert set(kept) - set(sent) == set(contract.ENRICHMENT_FIELDS) - {"client_event_timestamp"}


def uuid_version(text: str) -> int:
    import uuid

    return uuid.UUID(text).version


def test_ndjson_one_object_per_line() -> None:
    events = [{**EVENT, "context_product_name": "Ünïcode ☕"}, {**EVENT, "event_name": "purchase"}]
    body = ingest.serialise_ndjson(events)
    lines = body.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == events
    assert body.endswith(b"\n") and "☕".encode() in body
    single = ingest.serialise_ndjson([EVENT])
    assert json.loads(single) == EVENT  # a single-event object is exactly one JSON document


def test_failed_record_is_capped_and_keeps_what_fits() -> None:
    big = "x" * 100_000
    rej = RequestRejectedError(400, "malformed_json", "body is not valid JSON")
    rec = json.loads(ingest.failed_record(request(big), rej, NOW, 8192))
    assert rec["request"]["body_truncated"] is True
    assert big.startswith(rec["request"]["body"]) and rec["request"]["body"]
    assert len(ingest.failed_record(request(big), rej, NOW, 8192)) <= 8192
    small = json.loads(ingest.failed_record(request('{"a":1}'), rej, NOW, 8192))
    assert small["request"]["body"] == '{"a":1}' and small["request"]["body_truncated"] is False
    assert small["status"] == 400 and small["error"] == "malformed_json"
    many = RequestRejectedError(
        400, "validation_failed", "m", [contract.Violation(i, "/x", "y" * 50) for i in range(900)]
    )
    assert len(ingest.failed_record(request("{}"), many, NOW, 8192)) <= 8192


def test_failed_record_never_stores_credentials() -> None:
    req = request(
        "{}", headers={"content-type": "application/json", "cookie": "s=1", "authorization": "Bearer t"}
    )
    rec = json.loads(ingest.failed_record(req, RequestRejectedError(400, "e", "m"), NOW, 8192))
    assert rec["request"]["headers"] == {"content-type": "application/json"}


def test_stage_prefix_is_removed_from_the_path() -> None:
    event = {
        "rawPath": "/prod/clickstream",
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"stage": "prod", "http": {"method": "post", "sourceIp": "1.2.3.4"}},
    }
    req = IngestRequest.from_apigw_v2(event)
    assert (req.path, req.method, req.headers["content-type"]) == ("/clickstream", "POST", "application/json")


@pytest.mark.parametrize(
    "patch",
    [
        {},
        {"user_id": "u-1"},
        {"user_id": None},
        {"event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"},
        {"event_id": None},
        {"user_login_state": None, "identity_source": "google"},
        {"user_login_state": "guest", "identity_source": None, "user_id": "u"},
        {"context_product_name": 'Ünïcode ☕ "quoted" \\ back'},
    ],
)
def test_stored_object_holds_the_enriched_events_and_their_ids(
    patch: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ingest.RequestContext("2026-11-25T12:00:00.000000Z", 'UA "x"', None)
    events = [{**EVENT, **patch}, dict(EVENT)]
    ids = keys.uuid7_strings(2)
    monkeypatch.setattr(keys, "uuid7_strings", lambda count, unix_ms=None: ids[:count])
    body, event_ids = ingest.ndjson_body(events, ctx)
    stored = [json.loads(line) for line in body.decode("utf-8").splitlines()]
    assert stored == [ingest.enrich_event(e, ctx, new_id) for e, new_id in zip(events, ids, strict=True)]
    assert event_ids == [event["event_id"] for event in stored]
    assert body.endswith(b"\n") and body.count(b"\n") == 2
