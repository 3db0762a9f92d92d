"""The raw bucket's key layout and time-ordered ids (UUIDv7): the one place both are defined."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, date, datetime

EVENTS_PREFIX = "events/"
FAILED_PREFIX = "failed/"

_EVENT_KEY = re.compile(
    r"^events/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/event-(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json$"
)


def _uuid7_int(ms: int, rand: int) -> int:
    """The 128 bits of a UUIDv7 from a millisecond timestamp and 80 random bits."""
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return value


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp then random bits, so ids sort by time."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    return uuid.UUID(int=_uuid7_int(ms, int.from_bytes(os.urandom(10), "big")))


def uuid7_from(unix_ms: int, rand: int) -> uuid.UUID:
    """The UUIDv7 of a given millisecond time and 80 given random bits (a seeded generator's ids)."""
    return uuid.UUID(int=_uuid7_int(unix_ms, rand))


def uuid7_strings(count: int, unix_ms: int | None = None) -> list[str]:
    """`count` UUIDv7 strings (same layout as uuid7) from one read of the random source.

    The batch path of ingest: one os.urandom call per request instead of one per event.
    """
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    pool = os.urandom(10 * count)
    out = []
    for i in range(count):
        h = f"{_uuid7_int(ms, int.from_bytes(pool[10 * i : 10 * i + 10], 'big')):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def uuid7_time(value: uuid.UUID) -> datetime:
    """The UTC millisecond timestamp carried by a UUIDv7."""
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=UTC)


def day_prefix(kind_prefix: str, day: date) -> str:
    """`events/YYYY/MM/DD/` (or `failed/...`) for a UTC day."""
    return f"{kind_prefix}{day:%Y/%m/%d}/"


def event_key(received_at: datetime, object_id: uuid.UUID) -> str:
    """Key of the raw object written for one accepted request."""
    return f"{day_prefix(EVENTS_PREFIX, received_at.astimezone(UTC).date())}event-{object_id}.json"


def failed_key(received_at: datetime, object_id: uuid.UUID) -> str:
    """Key of the record kept for one rejected request."""
    return f"{day_prefix(FAILED_PREFIX, received_at.astimezone(UTC).date())}request-{object_id}.json"


def parse_event_key(key: str) -> tuple[date, uuid.UUID] | None:
    """(UTC day, object id) of a raw event key, or None when the key is not in the layout."""
    match = _EVENT_KEY.match(key)
    if not match:
        return None
    day = date(int(match["y"]), int(match["m"]), int(match["d"]))
    return day, uuid.UUID(match["id"])
