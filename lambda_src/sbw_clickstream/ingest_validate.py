"""Validation of an ingest request's body: its JSON shape (one event or {"events": [...], "sent_at": ...}),
then every event against the contract and the accepted time window, each event on its own (a batch
keeps its valid events; ingest answers the invalid ones by index).

Clock correction (the derived-timestamp method): a batch may carry `sent_at`, the client's clock when
it sent the request. The client's clock error is then `sent_at - received_at` (network time included),
and an event's corrected time is `received_at - (sent_at - event_timestamp)`: a device clock hours
fast or slow still gives the right time, and the time window is applied to the corrected time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sbw_clickstream import contract
from sbw_clickstream.contract import Violation
from sbw_clickstream.ingest_config import IngestConfig
from sbw_clickstream.ingest_http import RequestRejectedError

_TIMESTAMP = re.compile(contract.EVENT_SCHEMA["properties"]["event_timestamp"]["pattern"].replace("$", r"\Z"))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


ENVELOPE_FIELDS = ("events", "sent_at")


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed request body: its events, whether it was a batch, and the client's send time."""

    events: list[Any]
    batch: bool
    sent_at: str | None = None


def events_of_body(data: bytes, max_events: int) -> tuple[list[Any], bool]:
    """The events of a body (one event object, or {"events": [...]}) and whether it was a batch."""
    body = parse_body(data, max_events)
    return body.events, body.batch


def clock_skew(sent_at: str | None, received_at: datetime) -> timedelta | None:
    """How far the client's clock is ahead of ours (`sent_at - received_at`), None without sent_at."""
    if sent_at is None:
        return None
    return contract.parse_timestamp(sent_at) - received_at


def parse_body(data: bytes, max_events: int) -> Body:
    """The events of a body (one event object, or {"events": [...], "sent_at": ...}), RequestRejectedError
    when its shape is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejectedError(400, "malformed_json", f"body is not valid UTF-8: {exc.reason}") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise RequestRejectedError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestRejectedError(
            400,
            "bad_request_shape",
            f'body is a JSON {type(doc).__name__}; send one event object or {{"events": [...]}}',
        )
    if "events" not in doc:
        return Body([doc], False)
    events = doc["events"]
    extra = sorted(k for k in doc if k not in ENVELOPE_FIELDS)
    if extra:
        raise RequestRejectedError(
            400,
            "bad_request_shape",
            'a batch is {"events": [...]} and nothing else',
            [Violation(None, "/" + _escape(k), "unknown property of the batch envelope") for k in extra],
        )
    if not isinstance(events, list):
        raise RequestRejectedError(400, "bad_request_shape", '"events" must be an array of event objects')
    if not events:
        raise RequestRejectedError(400, "bad_request_shape", '"events" is empty; send 1 to 500 events')
    if len(events) > max_events:
        raise RequestRejectedError(
            413, "payload_too_large", f"batch has {len(events)} events; the limit is {max_events} per request"
        )
    sent_at = doc.get("sent_at")
    if sent_at is not None and not _valid_timestamp(sent_at):
        raise RequestRejectedError(
            400,
            "bad_request_shape",
            '"sent_at" must be the client\'s send time, RFC 3339 with an offset',
            [Violation(None, "/sent_at", f"{str(sent_at)[:64]!r} is not an RFC 3339 date-time")],
        )
    return Body(events, True, sent_at)


def _valid_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 40 or not _TIMESTAMP.match(value):
        return False
    try:
        contract.parse_timestamp(value)
    except ValueError:
        return False
    return True


def login_state_violation(event: dict[str, Any], index: int) -> Violation | None:
    """The identity rule: the login state is derived from user_id (logged_in when it is set, guest
    when not); a client value that says otherwise is refused rather than guessed at."""
    state = event.get("user_login_state")
    if state is None:
        return None
    has_user = event.get("user_id") is not None
    if state == ("logged_in" if has_user else "guest"):
        return None
    what = "a user_id is set" if has_user else "user_id is null"
    return Violation(
        index,
        "/user_login_state",
        f"user_login_state {state!r} contradicts the event: {what} (the login state is derived from "
        "user_id: logged_in when it is set, guest when not; send it consistent or null)",
    )


def validate_batch(
    events: list[Any],
    received_at: datetime,
    config: IngestConfig,
    text_has_escapes: bool = True,
    skew: timedelta | None = None,
) -> list[Violation]:
    """Every violation of every event (contract, time window, duplicate ids); empty means accept all.

    `text_has_escapes=False` (the body held no `\\u` escape) lets the contract skip its string scan.
    `skew` (the client's clock error, `clock_skew`) corrects each event's time before the window check.
    A client's value for a field ingest derives from the request (`contract.REQUEST_DERIVED_FIELDS`:
    ua_*, device_class, is_bot, referrer_host, traffic_source, channel_group) is removed from the
    event here, so enrichment sets it from the request alone.
    """
    found: list[Violation] = []
    newest = received_at + config.max_future_skew
    oldest = received_at - config.max_event_age
    if skew is not None:  # compare the client's times with the window moved by its clock error
        newest, oldest = newest + skew, oldest + skew
    seen_ids: dict[str, int] = {}
    derived = contract.REQUEST_DERIVED_FIELDS
    for index, event in enumerate(events):
        if event.__class__ is dict and not derived.isdisjoint(event):
            for name in derived.intersection(event):  # ingest derives these from the request
                del event[name]
        problems = contract.validate_event(event, index, check_strings=text_has_escapes)
        if problems:
            found.extend(problems)
            continue
        contradiction = login_state_violation(event, index)
        if contradiction is not None:
            found.append(contradiction)
        when = contract.parse_timestamp(event["event_timestamp"])
        if when > newest:
            found.append(
                Violation(
                    index,
                    "/event_timestamp",
                    f"event_timestamp {event['event_timestamp']} is more than "
                    f"{int(config.max_future_skew.total_seconds())} s in the future "
                    f"(received at {contract.format_timestamp(received_at)})",
                )
            )
        elif when < oldest:
            found.append(
                Violation(
                    index,
                    "/event_timestamp",
                    f"event_timestamp {event['event_timestamp']} is older than the accepted window of "
                    f"{config.max_event_age.total_seconds() / 3600:g} h "
                    f"(received at {contract.format_timestamp(received_at)})",
                )
            )
        event_id = event.get("event_id")
        if event_id is not None:
            norm = event_id.lower()
            if norm in seen_ids:
                found.append(
                    Violation(index, "/event_id", f"duplicate event_id: same as event {seen_ids[norm]}")
                )
            else:
                seen_ids[norm] = index
    return found
