"""The clickstream event contract: one JSON Schema file, shared by ingest, ETL and the tests.

Validation has a fast path (fastjsonschema, compiled once) for the common valid case and a
complete path (jsonschema, draft 2020-12) that lists every violation when the fast path fails.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator

SCHEMA_RESOURCE = "schemas/clickstream-event.v1.json"

EVENT_SCHEMA: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
)
SCHEMA_VERSION: str = EVENT_SCHEMA["x-schema-version"]
STANDARD_EVENT_NAMES: tuple[str, ...] = tuple(EVENT_SCHEMA["x-standard-event-names"])

# Columns of clickstream_events that come from the client, in schema order.
EVENT_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA["properties"])
REQUIRED_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA["required"])

# Fields ingest adds; the stored (enriched) event is the client event plus these.
ENRICHMENT_PROPERTIES: dict[str, Any] = {
    "received_at": {"type": "string", "maxLength": 40},
    "schema_version": {"type": "string", "maxLength": 16},
    "user_agent": {"type": ["string", "null"], "maxLength": 512},
    "client_ip": {"type": ["string", "null"], "maxLength": 64},
}
ENRICHMENT_FIELDS: tuple[str, ...] = tuple(ENRICHMENT_PROPERTIES)


def _stored_schema() -> dict[str, Any]:
    schema = copy.deepcopy(EVENT_SCHEMA)
    schema["title"] = "Stored clickstream event (enriched by ingest)"
    schema["properties"].update(copy.deepcopy(ENRICHMENT_PROPERTIES))
    schema["required"] = [*REQUIRED_FIELDS, "event_id"]
    return schema


STORED_EVENT_SCHEMA: dict[str, Any] = _stored_schema()

MAX_EVENTS_PER_REQUEST = 500
MAX_BODY_BYTES = 1024 * 1024

_fast_client = fastjsonschema.compile(EVENT_SCHEMA)
_fast_stored = fastjsonschema.compile(STORED_EVENT_SCHEMA)
_full_client = Draft202012Validator(EVENT_SCHEMA)
_full_stored = Draft202012Validator(STORED_EVENT_SCHEMA)


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
    text = value.replace("z", "Z").replace("t", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, _, frac_tail = text.partition(".")
    if frac_tail:  # Python keeps microseconds; RFC 3339 allows more digits.
        digits = frac_tail[: len(frac_tail) - 6]
        text = f"{head}.{digits[:6].ljust(6, '0')}{frac_tail[-6:]}"
    return datetime.fromisoformat(text)


def _semantic_violations(event: dict[str, Any], index: int | None) -> list[Violation]:
    """Rules JSON Schema cannot express: real calendar timestamps, discount <= price, finite numbers."""
    found: list[Violation] = []
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


def _violations(event: Any, index: int | None, fast: Any, full: Draft202012Validator) -> list[Violation]:
    try:
        fast(event)
    except fastjsonschema.JsonSchemaException:
        errors = sorted(full.iter_errors(event), key=lambda e: (list(e.absolute_path), e.message))
        found = [Violation(index, _pointer(e.absolute_path), e.message) for e in errors]
        if not found:  # the two validators disagree: never accept silently
            found = [Violation(index, "", "event does not match the contract")]
        return found
    return _semantic_violations(event, index)


def validate_event(event: Any, index: int | None = None) -> list[Violation]:
    """Violations of one client event (empty list when valid)."""
    return _violations(event, index, _fast_client, _full_client)


def validate_stored_event(event: Any, index: int | None = None) -> list[Violation]:
    """Violations of one stored (enriched) event as read back from the raw bucket."""
    return _violations(event, index, _fast_stored, _full_stored)


def validate_events(events: list[Any]) -> list[Violation]:
    """Violations of every event of a request, each tagged with its index."""
    found: list[Violation] = []
    for index, event in enumerate(events):
        found.extend(validate_event(event, index))
    return found
