"""Property: any event the schema accepts round-trips into the stored object unchanged (plus enrichment).

Events are generated from the contract's JSON Schema itself (types, bounds, patterns, enums), with
timestamps drawn inside the accepted time window; the handler's S3 write is captured byte for byte.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sbw_clickstream import contract, ingest_handler
from sbw_clickstream.ingest_config import IngestConfig

from tests.ingest_support import apigw_event

DERIVED_WHEN_NULL = ("event_id", "user_login_state", "identity_source")
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


class CapturingS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, **kwargs: Any) -> None:
        self.objects[kwargs["Key"]] = kwargs["Body"]


def _timestamps() -> st.SearchStrategy[str]:
    """RFC 3339 strings in every shape the pattern allows, inside the accepted window (relative to the
    moment of drawing, so a test run long after collection still draws accepted timestamps)."""
    age = st.timedeltas(min_value=-timedelta(minutes=4), max_value=timedelta(days=6, hours=23))
    offset = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))

    def render(age: timedelta, tz: timezone, digits: int, zulu: str, sep: str) -> str:
        local = (datetime.now(UTC) - age).astimezone(tz)
        text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
        if digits:
            text += "." + f"{local.microsecond:06d}{'0' * 3}"[:digits]
        if tz.utcoffset(None) == timedelta(0) and zulu:
            return text + zulu
        return text + local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]

    return st.builds(
        render, age, offset, st.integers(0, 9), st.sampled_from(["", "Z", "z"]), st.sampled_from("Tt")
    )


def _value(name: str, prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    if name == "event_timestamp":
        return _timestamps()
    kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    options: list[st.SearchStrategy[Any]] = []
    for kind in kinds:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "number":
            low, high = prop.get("minimum", 0), prop.get("maximum", 1e12)
            options.append(st.floats(low, high, allow_nan=False, allow_infinity=False))
            options.append(st.integers(int(low), int(min(high, 10**12))))
        elif kind == "string" and "enum" in prop:
            options.append(st.sampled_from([v for v in prop["enum"] if v is not None]))
        elif kind == "string" and "pattern" in prop:
            options.append(
                st.from_regex(prop["pattern"], fullmatch=True).filter(
                    lambda s, p=prop: p.get("minLength", 0) <= len(s) <= p.get("maxLength", 10**6)
                )
            )
        elif kind == "string":
            options.append(
                st.text(TEXT, min_size=prop.get("minLength", 0), max_size=prop.get("maxLength", 64))
            )
    return st.one_of(options)


def events() -> st.SearchStrategy[dict[str, Any]]:
    props = contract.EVENT_SCHEMA["properties"]
    required = {name: _value(name, props[name]) for name in contract.REQUIRED_FIELDS}
    optional = {name: _value(name, prop) for name, prop in props.items() if name not in required}
    return st.fixed_dictionaries(required, optional=optional).map(_consistent_login)


def _consistent_login(event: dict[str, Any]) -> dict[str, Any]:
    """The identity rule: a login state, when sent, agrees with user_id (ingest refuses one that
    contradicts it: tests/test_identity_rule.py)."""
    if event.get("user_login_state") is not None:
        event["user_login_state"] = "logged_in" if event.get("user_id") is not None else "guest"
    return event


def _configure() -> CapturingS3:
    s3 = CapturingS3()
    ingest_handler.configure_with(IngestConfig(raw_bucket="prop-bucket", region="ap-southeast-1"), s3=s3)
    return s3


def _assert_round_trip(sent: dict[str, Any], stored: dict[str, Any]) -> None:
    for name, value in sent.items():
        if name in DERIVED_WHEN_NULL and value is None:
            assert stored[name] is not None
            continue
        assert stored[name] == value and type(stored[name]) is type(value), name
    # client_event_timestamp: only for a batch with sent_at (tests/test_ingest_exactly_once.py)
    enrichment = set(contract.ENRICHMENT_FIELDS) - {"client_event_timestamp"}
    assert set(stored) == set(sent) | set(DERIVED_WHEN_NULL) | enrichment
    assert contract.validate_stored_event(stored) == []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(st.lists(events(), min_size=1, max_size=4), st.booleans())
def test_accepted_events_round_trip(batch: list[dict[str, Any]], as_batch: bool) -> None:
    for event in batch:
        assume(contract.validate_event(event) == [])  # e.g. discount above price: not an accepted event
    ids = [e.get("event_id") for e in batch if e.get("event_id") is not None]
    assume(len({i.lower() for i in ids}) == len(ids))
    if not as_batch:
        batch = batch[:1]
    s3 = _configure()
    body = json.dumps({"events": batch} if as_batch else batch[0], ensure_ascii=False)
    result = ingest_handler.lambda_handler(apigw_event(body), None)
    assert result["statusCode"] == 200, result["body"]
    ((key, raw),) = s3.objects.items()
    assert key == json.loads(result["body"])["key"]
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(batch) + 1
    for sent, line in zip(batch, lines, strict=False):
        _assert_round_trip(sent, json.loads(line))
