"""The clickstream event contract: one JSON Schema file, shared by ingest, ETL and the tests.

Validation has a fast path (fastjsonschema, compiled once) for the common valid case and a
complete path (jsonschema, draft 2020-12) that lists every violation when the fast path fails.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

if TYPE_CHECKING:  # jsonschema is imported on the (rare) error path only: it costs ~40 ms at cold start
    from jsonschema import Draft202012Validator

SCHEMA_RESOURCE = "schemas/clickstream-event.v1.json"
SCHEMA_PATH = Path(__file__).with_name("schemas") / Path(SCHEMA_RESOURCE).name

EVENT_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
SCHEMA_VERSION: str = EVENT_SCHEMA["x-schema-version"]
STANDARD_EVENT_NAMES: tuple[str, ...] = tuple(EVENT_SCHEMA["x-standard-event-names"])

# Columns of clickstream_events that come from the client, in schema order.
EVENT_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA["properties"])
REQUIRED_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA["required"])

# The closed vocabularies of the v1.1 enrichment (warehouse columns device_class, channel_group).
DEVICE_CLASSES: tuple[str, ...] = ("desktop", "mobile", "tablet", "bot", "other")
CHANNEL_GROUPS: tuple[str, ...] = (
    "Direct",
    "Organic Search",
    "Paid Search",
    "Organic Social",
    "Paid Social",
    "Email",
    "Referral",
    "Campaign",
    "Internal",
    "Unassigned",
)

# Fields ingest adds; the stored (enriched) event is the client event plus these.
ENRICHMENT_PROPERTIES: dict[str, Any] = {
    "received_at": {
        "description": "Server time of receipt (UTC, RFC 3339); its date is the key's YYYY/MM/DD.",
        "type": "string",
        "maxLength": 40,
        "pattern": EVENT_SCHEMA["properties"]["event_timestamp"]["pattern"],
    },
    "schema_version": {"type": "string", "maxLength": 16},
    "user_agent": {"type": ["string", "null"], "maxLength": 512},
    "client_ip": {
        "description": "Client IP truncated for privacy: IPv4 to its /24, IPv6 to its /48 (network address).",
        "type": ["string", "null"],
        "maxLength": 64,
    },
    "client_event_timestamp": {
        "description": "The event_timestamp the client sent, when ingest corrected event_timestamp for the "
        "client's clock (the batch carried sent_at): event_timestamp = received_at - (sent_at - this).",
        "type": ["string", "null"],
        "maxLength": 40,
        "pattern": EVENT_SCHEMA["properties"]["event_timestamp"]["pattern"],
    },
    # Contract v1.1: derived by ingest from the request (enrich_useragent, enrich_traffic), never
    # trusted from the client (ingest drops a client's value for these before validation).
    "ua_browser": {
        "description": "Browser family from the User-Agent header.",
        "type": ["string", "null"],
        "maxLength": 64,
    },
    "ua_browser_version": {
        "description": "Browser major version.",
        "type": ["string", "null"],
        "maxLength": 16,
    },
    "ua_os": {
        "description": "Operating system family from the User-Agent header.",
        "type": ["string", "null"],
        "maxLength": 64,
    },
    "ua_os_version": {
        "description": "Operating system major version.",
        "type": ["string", "null"],
        "maxLength": 16,
    },
    "device_class": {"type": ["string", "null"], "enum": [*DEVICE_CLASSES, None]},
    "is_bot": {
        "description": "The User-Agent is a crawler or bot (kept, excluded from the dashboard by default).",
        "type": "boolean",
    },
    "referrer_host": {
        "description": "Lower-case host of page_referrer.",
        "type": ["string", "null"],
        "maxLength": 255,
    },
    "traffic_source": {
        "description": "Where the visit came from: utm_source, the referrer's known name (google, "
        "facebook), the referrer host, (direct) or (internal).",
        "type": ["string", "null"],
        "maxLength": 256,
    },
    "channel_group": {"type": ["string", "null"], "enum": [*CHANNEL_GROUPS, None]},
}
ENRICHMENT_FIELDS: tuple[str, ...] = tuple(ENRICHMENT_PROPERTIES)
# The v1.1 fields ingest derives from the request: a client's value for them is dropped, not refused.
REQUEST_DERIVED_FIELDS: frozenset[str] = frozenset(ENRICHMENT_FIELDS[ENRICHMENT_FIELDS.index("ua_browser") :])
# Stored-event fields whose warehouse column is NOT NULL with a default: the ETL writes the default
# for an event stored before the field existed (an older ingest).
STORED_FIELD_DEFAULTS: dict[str, Any] = {"is_bot": False}


def _stored_schema() -> dict[str, Any]:
    schema = copy.deepcopy(EVENT_SCHEMA)
    schema["title"] = "Stored clickstream event (enriched by ingest)"
    schema["properties"].update(copy.deepcopy(ENRICHMENT_PROPERTIES))
    schema["required"] = [*REQUIRED_FIELDS, "event_id", "received_at", "schema_version"]
    return schema


STORED_EVENT_SCHEMA: dict[str, Any] = _stored_schema()

MAX_EVENTS_PER_REQUEST = 500
MAX_BODY_BYTES = 1024 * 1024

# Fast path: compiled once (the client schema at import, the stored one on first use).
_fast_client = fastjsonschema.compile(EVENT_SCHEMA)


@cache
def _fast_stored() -> Any:
    return fastjsonschema.compile(STORED_EVENT_SCHEMA)


@cache
def _full_validator(stored: bool) -> Draft202012Validator:
    """The complete validator, built on first use, with ECMA-262 `$` semantics like the fast path.

    Python's `re.search` lets `$` match before a trailing newline ("page_view\\n"); fastjsonschema
    rewrites `$` to `\\Z`. The `pattern` keyword is overridden the same way so both paths agree.
    """
    import re

    from jsonschema import Draft202012Validator, ValidationError, validators

    dollar = re.compile(r"(?<!\\)\$")  # an unescaped `$` (what fastjsonschema rewrites)

    compiled: dict[str, re.Pattern[str]] = {}

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "string"):
            return
        regex = compiled.get(patrn)
        if regex is None:
            regex = compiled[patrn] = re.compile(dollar.sub(r"\\Z", patrn))
        if not regex.search(instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    strict = validators.extend(Draft202012Validator, {"pattern": pattern})
    return strict(STORED_EVENT_SCHEMA if stored else EVENT_SCHEMA)


@dataclass(frozen=True, slots=True)
class Violation:
    """One contract violation: which event, where in it (JSON pointer), and what is wrong."""

    index: int | None
    pointer: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "pointer": self.pointer, "message": self.message}


def _pointer(path: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset (the schema has checked its shape)."""
    try:  # fast path: Python 3.11 reads the common shapes (upper-case T/Z, any fraction digits) itself
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    text = value.replace("z", "Z").replace("t", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, _, frac_tail = text.partition(".")
    if frac_tail:  # Python keeps microseconds; RFC 3339 allows more digits.
        digits = frac_tail[: len(frac_tail) - 6]
        text = f"{head}.{digits[:6].ljust(6, '0')}{frac_tail[-6:]}"
    return datetime.fromisoformat(text)


def format_timestamp(value: datetime, *, utc: bool = True, timespec: str = "microseconds") -> str:
    """RFC 3339, the one formatter of the project.

    `utc=True`: converted to UTC with `Z` (`2024-06-01T02:00:00.123456Z`, how ingest writes
    received_at); `utc=False`: in the moment's own offset (`2024-06-01T10:00:00.123+08:00`, how a
    browser in Singapore writes event_timestamp). `timespec` as for `datetime.isoformat`.
    """
    if utc:
        return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
    if value.utcoffset() is None:
        raise ValueError("format_timestamp(utc=False) needs an aware datetime (RFC 3339 requires an offset)")
    return value.isoformat(timespec=timespec)


def _string_violation(value: str) -> str | None:
    """PostgreSQL text cannot hold NUL, and UTF-8 cannot encode lone surrogates (from JSON escapes)."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogate escapes)"
    return None


def _semantic_violations(event: dict[str, Any], index: int | None, check_strings: bool) -> list[Violation]:
    """Rules JSON Schema cannot express: real calendar timestamps, discount <= price, finite numbers,
    strings that UTF-8 and PostgreSQL can store."""
    found: list[Violation] = []
    if check_strings:
        for name, value in event.items():
            if value.__class__ is str and ("\x00" in value or not value.isascii()):  # cheap test first
                problem = _string_violation(value)
                if problem:
                    found.append(Violation(index, f"/{name}", problem))
    ts = event.get("event_timestamp")
    if isinstance(ts, str):
        try:
            parse_timestamp(ts)
        except ValueError:
            found.append(Violation(index, "/event_timestamp", f"{ts!r} is not a valid RFC 3339 date-time"))
    for name in ("context_product_price", "context_product_discount_price"):
        value = event.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            found.append(Violation(index, f"/{name}", "must be a finite number"))
    price = event.get("context_product_price")
    discount = event.get("context_product_discount_price")
    if (
        isinstance(price, int | float)
        and isinstance(discount, int | float)
        and not isinstance(price, bool)
        and not isinstance(discount, bool)
        and discount > price
    ):
        found.append(
            Violation(
                index,
                "/context_product_discount_price",
                f"discount price {discount} is greater than price {price}",
            )
        )
    return found


def _violations(
    event: Any, index: int | None, fast: Any, stored: bool, check_strings: bool = True
) -> list[Violation]:
    try:
        fast(event)
    except fastjsonschema.JsonSchemaException:
        full = _full_validator(stored)
        errors = sorted(full.iter_errors(event), key=lambda e: (list(e.absolute_path), e.message))
        found = [Violation(index, _pointer(e.absolute_path), e.message) for e in errors]
        if not found:  # the two validators disagree: never accept silently
            found = [Violation(index, "", "event does not match the contract")]
        return found
    return _semantic_violations(event, index, check_strings)


def validate_event(event: Any, index: int | None = None, *, check_strings: bool = True) -> list[Violation]:
    """Violations of one client event (empty list when valid).

    `check_strings=False` skips the NUL / lone-surrogate scan of string values; only for callers
    that proved it cannot find anything (ingest does when the JSON text holds no `\\u` escape:
    raw NUL is invalid JSON and a surrogate cannot be encoded in valid UTF-8).
    """
    return _violations(event, index, _fast_client, False, check_strings)


def validate_stored_event(event: Any, index: int | None = None) -> list[Violation]:
    """Violations of one stored (enriched) event as read back from the raw bucket."""
    return _violations(event, index, _fast_stored(), True)


def validate_events(events: list[Any]) -> list[Violation]:
    """Violations of every event of a request, each tagged with its index."""
    found: list[Violation] = []
    for index, event in enumerate(events):
        found.extend(validate_event(event, index))
    return found
