"""Enrichment of accepted events (ids, login state, server time, user agent, truncated client IP) and
their serialisation as the NDJSON object ingest stores.

Contract v1.1 adds what the request says and the client cannot be trusted with: the User-Agent
header's browser, OS, device class and bot flag (`enrich_useragent`, once per request) and each
event's referrer host, traffic source and channel group (`enrich_traffic`).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sbw_clickstream import contract, keys
from sbw_clickstream.enrich_traffic import traffic_fields
from sbw_clickstream.enrich_useragent import NO_USER_AGENT, classify_user_agent
from sbw_clickstream.ingest_http import IngestRequest

MAX_USER_AGENT_CHARS = 512


def truncate_ip(value: str | None) -> str | None:
    """The client IP's network for privacy: IPv4 /24 (203.0.113.0), IPv6 /48 (2001:db8:1::)."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Request-level enrichment shared by every event of a request."""

    received_at: str
    user_agent: str | None
    client_ip: str | None
    schema_version: str = contract.SCHEMA_VERSION
    # The client's clock error (`sent_at - received_at`) when the batch carried sent_at.
    skew: timedelta | None = None
    # ua_browser, ua_browser_version, ua_os, ua_os_version, device_class, is_bot of the request.
    agent_fields: dict[str, Any] = field(default_factory=NO_USER_AGENT.fields)


def request_context(
    request: IngestRequest, received_at: datetime, skew: timedelta | None = None
) -> RequestContext:
    """Server time, user agent (capped), truncated client IP and clock error of a request."""
    agent = request.user_agent
    if agent is not None:
        agent = agent[:MAX_USER_AGENT_CHARS] or None
    return RequestContext(
        contract.format_timestamp(received_at),
        agent,
        truncate_ip(request.source_ip),
        skew=skew,
        agent_fields=classify_user_agent(agent).fields(),
    )


def corrected_timestamp(event_timestamp: str, skew: timedelta) -> str:
    """The client's event time minus its clock error, in the client's own offset (milliseconds)."""
    return contract.format_timestamp(
        contract.parse_timestamp(event_timestamp) - skew, utc=False, timespec="milliseconds"
    )


def enrich_event(event: dict[str, Any], ctx: RequestContext, new_id: str | None = None) -> dict[str, Any]:
    """A copy of a valid client event plus enrichment; client-sent values are kept as sent.

    Derived when absent or null: `event_id` (UUIDv7; `new_id` when given), `user_login_state`
    (logged_in when user_id is set, else guest), `identity_source` (cognito when user_id is set,
    else anonymous). The request-derived v1.1 fields (user agent and traffic: see the module
    docstring) are always set here, whatever the client sent. With a clock error known (`ctx.skew`),
    `event_timestamp` is corrected for it and the sent value kept as `client_event_timestamp`.
    """
    out = dict(event)
    if ctx.skew is not None:
        out["client_event_timestamp"] = event["event_timestamp"]
        out["event_timestamp"] = corrected_timestamp(event["event_timestamp"], ctx.skew)
    if out.get("event_id") is None:
        out["event_id"] = new_id or str(keys.uuid7())
    logged_in = out.get("user_id") is not None
    if out.get("user_login_state") is None:
        out["user_login_state"] = "logged_in" if logged_in else "guest"
    if out.get("identity_source") is None:
        out["identity_source"] = "cognito" if logged_in else "anonymous"
    out["received_at"] = ctx.received_at
    out["schema_version"] = ctx.schema_version
    out["user_agent"] = ctx.user_agent
    out["client_ip"] = ctx.client_ip
    out.update(ctx.agent_fields)
    out.update(traffic_fields(event))
    return out


def enrich_events(events: list[dict[str, Any]], ctx: RequestContext) -> list[dict[str, Any]]:
    """Enrich every event of an accepted request (ids drawn in one go)."""
    ids = keys.uuid7_strings(len(events))
    return [enrich_event(event, ctx, new_id) for event, new_id in zip(events, ids, strict=True)]


# Compact UTF-8 JSON for one flat event; NaN/Infinity refused (the contract already rejects them).
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def serialise_ndjson(events: list[dict[str, Any]]) -> bytes:
    """One compact JSON object per line (UTF-8); a single event is exactly one JSON object."""
    return ("\n".join([_LINE_ENCODER.encode(e) for e in events]) + "\n").encode("utf-8")


def ndjson_body(events: list[dict[str, Any]], ctx: RequestContext) -> tuple[bytes, list[str]]:
    """The stored object of an accepted request (its events enriched, as NDJSON) and the event ids."""
    enriched = enrich_events(events, ctx)
    return serialise_ndjson(enriched), [event["event_id"] for event in enriched]
