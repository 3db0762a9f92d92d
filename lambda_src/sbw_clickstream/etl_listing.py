"""Which raw objects a run looks at: incremental listing from the watermark, or a backfill range.

Keys are `events/YYYY/MM/DD/event-<UUIDv7>.json`: their lexical order (what ListObjectsV2 returns)
is time order across days, so one listing of `events/` with `StartAfter` continues where the
previous run stopped and crosses day boundaries by itself. `StartAfter` is built from the
watermark's UUIDv7 time minus the look-back window, so an object written late (its key is older
than keys already processed) is still listed; objects already in `etl_objects` are not read again.
A run with nothing new therefore costs one ListObjectsV2 call (one per 1,000 keys of look-back),
whatever the bucket's history.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sbw_clickstream.contract import parse_timestamp
from sbw_clickstream.keys import day_prefix, parse_event_key, uuid7_time

# Upper bound of a day's keys: every key of the day sorts before it.
_END_OF_DAY = "\uffff"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One listed raw object."""

    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class ListingPlan:
    """Where a listing starts (exclusive) and stops (inclusive upper bound), and whether to re-read."""

    prefix: str
    start_after: str | None
    stop_after: str | None = None
    reprocess: bool = False
    mode: str = "incremental"
    key_filter: Callable[[str], bool] | None = None
    # A backfill's range as asked ({"from", "to"}): the key of its cursor in etl_backfills.
    range_id: tuple[str, str] | None = None


class BackfillError(ValueError):
    """The event's {"from", "to"} range is not usable."""


def floor_key(prefix: str, moment: datetime) -> str:
    """A key sorting before every object key whose UUIDv7 time is >= `moment` (same day prefix)."""
    moment = moment.astimezone(UTC)
    ms = int(moment.timestamp() * 1000)
    lowest = uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80)
    return f"{day_prefix(prefix, moment.date())}event-{lowest}"


def start_after_for(prefix: str, watermark: str | None, lookback: timedelta) -> str | None:
    """`StartAfter` for an incremental run: the watermark's time minus the look-back window.

    No watermark (first run): None, list from the beginning. A watermark key that is not a UUIDv7
    event key (e.g. an object of the seed's original function with a random UUIDv4) counts from the
    start of its day. A watermark outside the layout is no position at all (never written since
    issue 14; `run_etl` repairs an old one): list from the beginning.
    """
    if watermark is None:
        return None
    parsed = parse_event_key(watermark)
    if parsed is None:
        return None
    day, object_id = parsed
    moment = uuid7_time(object_id) if object_id.version == 7 else datetime.combine(day, time(), UTC)
    start = floor_key(prefix, moment - lookback)
    return min(start, watermark)


def _bound(value: Any, name: str) -> tuple[datetime, bool]:
    """(moment, whole_day) of one end of a backfill range."""
    if not isinstance(value, str) or not value.strip():
        raise BackfillError(f"backfill {name!r} must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC), True
        return parse_timestamp(text).astimezone(UTC), False
    except ValueError:
        raise BackfillError(f"backfill {name!r}: {value!r} is not a date or an RFC 3339 date-time") from None


def plan_backfill(prefix: str, event: dict[str, Any]) -> ListingPlan:
    """Plan for `{"from": ..., "to": ...}`: dates are whole UTC days, both ends inclusive.

    The listing covers the whole days of the range; with date-times, UUIDv7 keys outside the
    exact range are left out (keys that are not UUIDv7 count by their day only).
    """
    start, _ = _bound(event.get("from"), "from")
    end, end_is_day = _bound(event.get("to"), "to")
    if end_is_day:
        end = end + timedelta(days=1) - timedelta(microseconds=1)
    if end < start:
        raise BackfillError(f"backfill range is empty: from {event['from']!r} is after to {event['to']!r}")

    def in_range(key: str) -> bool:
        parsed = parse_event_key(key)
        if parsed is None or parsed[1].version != 7:
            return True
        return start <= uuid7_time(parsed[1]) <= end

    return ListingPlan(
        prefix,
        start_after=day_prefix(prefix, start.date()),
        stop_after=f"{day_prefix(prefix, end.date())}{_END_OF_DAY}",
        reprocess=True,
        mode="backfill",
        key_filter=in_range,
        range_id=(str(event["from"]).strip(), str(event["to"]).strip()),
    )


def is_backfill(event: Any) -> bool:
    """Whether the invocation event asks for a backfill."""
    return isinstance(event, dict) and ("from" in event or "to" in event)


def list_objects(
    list_page: Callable[..., dict[str, Any]],
    bucket: str,
    plan: ListingPlan,
    page_size: int = 1000,
) -> Iterator[list[ObjectRef]]:
    """Pages of listed objects in key order, from `plan.start_after` up to `plan.stop_after`.

    `list_page(**kwargs)` is one ListObjectsV2 call (the caller adds retries and counting). Pages
    are fetched lazily, so a huge backlog is never held in memory at once.
    """
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": plan.prefix, "MaxKeys": page_size}
        if token:
            kwargs["ContinuationToken"] = token
        elif plan.start_after:
            kwargs["StartAfter"] = plan.start_after
        response = list_page(**kwargs)
        page: list[ObjectRef] = []
        done = False
        for item in response.get("Contents", ()):
            key = item["Key"]
            if plan.stop_after is not None and key > plan.stop_after:
                done = True
                break
            if plan.key_filter is not None and not plan.key_filter(key):
                continue
            page.append(ObjectRef(key, str(item.get("ETag", "")).strip('"'), int(item.get("Size", 0))))
        if page:
            yield page
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        if done or not token:
            return
