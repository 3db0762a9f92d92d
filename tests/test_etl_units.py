"""ETL plain functions without services: config, listing plans, object parsing and encoding."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sbw_clickstream.etl_config import ConfigError, EtlConfig, clear_password_cache, resolve_password
from sbw_clickstream.etl_listing import (
    BackfillError,
    ListingPlan,
    ObjectRef,
    floor_key,
    list_objects,
    plan_backfill,
    start_after_for,
)
from sbw_clickstream.etl_read import derive_event_id, encode_object, parse_events, read_object
from sbw_clickstream.etl_retry import EtlError, RetryPolicy, call_with_retries
from sbw_clickstream.keys import event_key, uuid7

BASE_ENV = {
    "DWH_HOST": "10.0.128.10",
    "DWH_PORT": "5432",
    "DWH_USER": "sbw_etl",
    "DWH_DATABASE": "clickstream_dw",
    "RAW_BUCKET": "clickstream-s3-ingest",
    "AWS_REGION": "ap-southeast-1",
    "DWH_PASSWORD_PARAM": "/sbw/dwh/etl_password",
}


def test_config_from_the_seed_environment() -> None:
    config = EtlConfig.from_env(BASE_ENV)
    assert (config.dwh_host, config.dwh_port, config.dwh_database) == ("10.0.128.10", 5432, "clickstream_dw")
    assert config.lookback_minutes == 15 and config.password_param == "/sbw/dwh/etl_password"
    assert "password" not in repr(config).lower() or config.password is None


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"DWH_HOST": ""}, "DWH_HOST"),
        ({"DWH_USER": None}, "DWH_USER"),
        ({"DWH_PORT": "54x"}, "DWH_PORT"),
        ({"DWH_PORT": "70000"}, "DWH_PORT"),
        ({"RAW_BUCKET": "Not_A_Bucket"}, "RAW_BUCKET"),
        ({"DWH_PASSWORD_PARAM": None}, "DWH_PASSWORD_PARAM"),
        ({"DWH_PASSWORD_PARAM": "sbw/no-slash"}, "DWH_PASSWORD_PARAM"),
        ({"ETL_LOOKBACK_MINUTES": "-1"}, "ETL_LOOKBACK_MINUTES"),
        ({"ETL_READ_CONCURRENCY": "0"}, "ETL_READ_CONCURRENCY"),
        ({"DWH_SSLMODE": "sometimes"}, "DWH_SSLMODE"),
        ({"AWS_REGION": None}, "AWS_REGION"),
    ],
)
def test_invalid_config_names_the_variable(change: dict[str, str | None], variable: str) -> None:
    env = {k: v for k, v in {**BASE_ENV, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        EtlConfig.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_password_from_ssm_is_read_once_per_container() -> None:
    clear_password_cache()
    calls: list[dict[str, Any]] = []

    class Ssm:
        def get_parameter(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            return {"Parameter": {"Value": "s3cret"}}

    config = EtlConfig.from_env(BASE_ENV)
    assert resolve_password(config, Ssm) == "s3cret"
    assert resolve_password(config, Ssm) == "s3cret"
    assert calls == [{"Name": "/sbw/dwh/etl_password", "WithDecryption": True}]
    clear_password_cache()


def test_plain_password_for_local_runs() -> None:
    env = {**BASE_ENV, "DWH_PASSWORD": "local"}
    del env["DWH_PASSWORD_PARAM"]
    config = EtlConfig.from_env(env)
    assert resolve_password(config, lambda: pytest.fail("no SSM call expected")) == "local"


def test_start_after_is_the_watermark_time_minus_lookback_across_midnight() -> None:
    moment = datetime(2026, 11, 25, 0, 5, tzinfo=UTC)
    watermark = event_key(moment, uuid7(int(moment.timestamp() * 1000)))
    start = start_after_for("events/", watermark, timedelta(minutes=15))
    assert start is not None and start.startswith("events/2026/11/24/event-")
    late = event_key(
        moment - timedelta(minutes=14), uuid7(int((moment - timedelta(minutes=14)).timestamp() * 1000))
    )
    too_late = event_key(
        moment - timedelta(minutes=16), uuid7(int((moment - timedelta(minutes=16)).timestamp() * 1000))
    )
    assert too_late < start < late < watermark
    assert start_after_for("events/", None, timedelta(minutes=15)) is None


def test_start_after_for_a_legacy_uuid4_watermark_starts_at_its_day() -> None:
    watermark = f"events/2026/11/25/event-{uuid.uuid4()}.json"
    start = start_after_for("events/", watermark, timedelta(minutes=15))
    assert start is not None and start.startswith("events/2026/11/24/event-")


def test_floor_key_sorts_before_every_key_of_that_millisecond() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    keys = [event_key(moment, uuid7(int(moment.timestamp() * 1000))) for _ in range(50)]
    floor = floor_key("events/", moment)
    assert all(floor < key for key in keys)
    assert floor > event_key(moment, uuid7(int(moment.timestamp() * 1000) - 1))


def test_backfill_plan_covers_whole_days_inclusive() -> None:
    plan = plan_backfill("events/", {"from": "2026-11-20", "to": "2026-11-21"})
    inside = ["events/2026/11/20/event-x.json", "events/2026/11/21/event-zzz.json"]
    outside = ["events/2026/11/19/event-z.json", "events/2026/11/22/event-0.json"]
    assert all(plan.start_after < k <= plan.stop_after for k in inside)
    assert not any(plan.start_after < k <= plan.stop_after for k in outside)
    assert plan.reprocess and plan.mode == "backfill"


@pytest.mark.parametrize(
    "event",
    [
        {"from": "2026-11-21", "to": "2026-11-20"},
        {"from": "yesterday", "to": "2026-11-20"},
        {"to": "2026-11-20"},
    ],
)
def test_bad_backfill_ranges_are_refused(event: dict[str, Any]) -> None:
    with pytest.raises(BackfillError):
        plan_backfill("events/", event)


def test_listing_pages_stop_at_the_range_end() -> None:
    keys = [f"events/2026/11/{d:02d}/event-{i}.json" for d in (20, 21, 22) for i in range(3)]
    calls: list[dict[str, Any]] = []

    def list_page(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        after = kwargs.get("StartAfter", "")
        chosen = [k for k in keys if k > after][: kwargs["MaxKeys"]]
        return {"Contents": [{"Key": k, "ETag": '"e"', "Size": 1} for k in chosen], "IsTruncated": False}

    plan = plan_backfill("events/", {"from": "2026-11-21", "to": "2026-11-21"})
    pages = list(list_objects(list_page, "bucket", plan))
    assert [ref.key for page in pages for ref in page] == keys[3:6]
    assert len(calls) == 1 and calls[0]["StartAfter"] == "events/2026/11/21/"
    assert list(list_objects(list_page, "b", ListingPlan("events/", keys[-1]))) == []


REF = ObjectRef("events/2026/11/25/event-0193c2a4-5e00-7000-8000-000000000001.json", "etag", 10)


def _event(**extra: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid7()),
        "event_timestamp": "2026-11-25T10:00:00.123Z",
        "event_name": "page_view",
        "client_id": "c1",
        "session_id": "s1",
        "received_at": "2026-11-25T10:00:01.000000Z",
        "schema_version": "1.0.0",
    }
    event.update(extra)
    return event


def test_both_object_shapes_parse() -> None:
    ndjson = b'{"a": 1}\n\n{"b": 2}\n'
    assert parse_events(ndjson) == [(1, {"a": 1}), (3, {"b": 2})]
    pretty = json.dumps({"a": 1, "b": {"c": 2}}, indent=2).encode()
    assert parse_events(pretty) == [(1, {"a": 1, "b": {"c": 2}})]


def test_legacy_event_without_id_gets_a_deterministic_id() -> None:
    legacy = {k: v for k, v in _event().items() if k not in ("event_id", "received_at", "schema_version")}
    first = encode_object(REF, json.dumps(legacy, indent=2).encode())
    second = encode_object(REF, json.dumps(legacy).encode())
    assert first.status == second.status == "loaded"
    assert first.data == second.data and first.derived_ids == 1 and first.legacy_events == 1
    assert derive_event_id(REF.key, 1) in first.data.decode()
    assert derive_event_id(REF.key, 1) != derive_event_id(REF.key, 2)


def test_copy_rows_escape_tabs_newlines_and_backslashes() -> None:
    result = encode_object(REF, json.dumps(_event(user_agent="a\tb\nc\\d\re")).encode())
    assert result.status == "loaded"
    line = result.data.decode()
    assert line.count("\n") == 1 and "a\\tb\\nc\\\\d\\re" in line


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "invalid JSON"),
        (b'{"a": 1}\n{broken', "line 2: invalid JSON"),
        (b"   \n", "empty object"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps(_event(event_name="Bad Name")).encode(), "/event_name"),
        (json.dumps(_event(client_id="nul\u0000")).encode(), "NUL"),
        (b'{"event_id": "0194a0b0-0000-7000-8000-000000000000", "client_id": "\\ud800"}', "invalid event"),
    ],
)
def test_bad_objects_are_quarantined_with_a_reason(body: bytes, reason: str) -> None:
    result = encode_object(REF, body)
    assert result.status == "quarantined"
    assert result.error is not None and reason in result.error
    assert "\x00" not in result.error


def test_retries_then_a_clear_error() -> None:
    sleeps: list[float] = []
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("boom")

    with pytest.raises(EtlError, match=r"S3 thing failed after 4 attempts: boom"):
        call_with_retries(flaky, "S3 thing", RetryPolicy(3, 0.01, sleep=sleeps.append))
    assert len(attempts) == 4 and len(sleeps) == 3 and sleeps[0] < sleeps[2]


def test_date_of_floor_key_is_utc() -> None:
    moment = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    assert floor_key("events/", moment).startswith(f"events/{date(2026, 11, 25):%Y/%m/%d}/")


class _TrickleBody:
    """A streaming body that returns at most 7 bytes per read, like a slow network."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    def read(self, amount: int) -> bytes:
        chunk, self.data = self.data[: min(amount, 7)], self.data[min(amount, 7) :]
        return chunk

    def close(self) -> None:
        self.closed = True


def test_read_object_reads_every_chunk_and_caps_the_size() -> None:
    body = (json.dumps(_event()) + "\n" + json.dumps(_event())).encode()
    bodies: list[_TrickleBody] = []

    class S3:
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            bodies.append(_TrickleBody(body))
            return {"Body": bodies[-1]}

    policy = RetryPolicy(0)
    ok = read_object(S3(), "b", ObjectRef(REF.key, "e", 0), len(body), policy)
    assert (ok.status, ok.rows) == ("loaded", 2)
    big = read_object(S3(), "b", ObjectRef(REF.key, "e", 0), len(body) - 1, policy)
    assert big.status == "quarantined" and "too large" in (big.error or "")
    assert all(b.closed for b in bodies)
    listed_big = read_object(S3(), "b", ObjectRef(REF.key, "e", 10**9), len(body), policy)
    assert listed_big.status == "quarantined" and len(bodies) == 2  # refused without a GET


def test_transient_errors_are_not_retried_past_the_deadline() -> None:
    slept: list[float] = []
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        raise ConnectionError("reset")

    policy = RetryPolicy(attempts=10, base_seconds=1.0, sleep=slept.append, time_left=lambda: 0.4)
    with pytest.raises(EtlError, match="no time left before the deadline"):
        call_with_retries(flaky, "S3 GetObject x", policy)
    assert calls["n"] == 1 and slept == []
