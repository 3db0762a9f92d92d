"""clickstream-lambda-ingest as plain functions: request in, response out, S3 client passed in.

Order of checks for a request: route (404/405, OPTIONS preflight) -> content type and encoding (415)
-> body decoding: base64, gzip, size (400/413) -> JSON shape: one event or {"events": [...]}
(400/413) -> the contract and the time window for every event, all or nothing (400) -> enrichment
-> one NDJSON object under events/ (200) or, when S3 fails, 503 with Retry-After and nothing written.
Every rejected request is recorded under failed/ (size-capped, reasons + original payload) unless
switched off. Each step lives in the module of its job: `ingest_http` (request, response, routing,
CORS, body decoding), `ingest_validate`, `ingest_enrich`, `ingest_store`; this module runs them in
order. The handler (`ingest_handler.py`) only adapts API Gateway events and logs outcomes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sbw_clickstream import keys
from sbw_clickstream.ingest_config import IngestConfig
from sbw_clickstream.ingest_enrich import (
    MAX_USER_AGENT_CHARS,
    RequestContext,
    enrich_event,
    enrich_events,
    ndjson_body,
    request_context,
    serialise_ndjson,
    truncate_ip,
)
from sbw_clickstream.ingest_http import (
    HttpSurface,
    IngestOutcome,
    IngestRequest,
    IngestResponse,
    RequestRejectedError,
    check_content_type,
    decode_body,
    gunzip_limited,
)
from sbw_clickstream.ingest_store import failed_record, write_events, write_failed_record
from sbw_clickstream.ingest_validate import events_of_body, validate_batch

__all__ = [
    "MAX_USER_AGENT_CHARS",
    "RETRY_AFTER_SECONDS",
    "HttpSurface",
    "IngestOutcome",
    "IngestRequest",
    "IngestResponse",
    "RequestContext",
    "RequestRejectedError",
    "accept",
    "check_content_type",
    "decode_body",
    "enrich_event",
    "enrich_events",
    "events_of_body",
    "failed_record",
    "gunzip_limited",
    "handle_request",
    "http_surface",
    "ndjson_body",
    "reject",
    "request_context",
    "serialise_ndjson",
    "truncate_ip",
    "validate_batch",
]

RETRY_AFTER_SECONDS = 1


def accept(
    request: IngestRequest, config: IngestConfig, received_at: datetime
) -> tuple[list[dict[str, Any]], RequestContext]:
    """Decode, parse and validate a POST body: its events and enrichment context, or RequestRejectedError."""
    gzipped = check_content_type(request.headers)
    data = decode_body(request, gzipped, config.max_body_bytes)
    events, batch = events_of_body(data, config.max_events_per_request)
    violations = validate_batch(events, received_at, config, b"\\u" in data)
    if violations:
        count = len({v.index for v in violations})
        what = f"{count} of {len(events)} events are invalid" if batch else "the event is invalid"
        raise RequestRejectedError(400, "validation_failed", f"{what}; nothing was stored", violations)
    return events, request_context(request, received_at)


def handle_request(
    request: IngestRequest, config: IngestConfig, s3: Any, now: datetime | None = None
) -> IngestOutcome:
    """Answer a POST on the ingest path: accept, write; record a rejection under failed/ when switched on.

    Routing and CORS are the HTTP surface's (`ingest_http.HttpSurface`), which calls this.
    """
    received_at = now or datetime.now(UTC)
    try:
        events, ctx = accept(request, config, received_at)
    except RequestRejectedError as rejection:
        return reject(request, rejection, config, s3, received_at)
    object_id = keys.uuid7(int(received_at.timestamp() * 1000))
    key = keys.event_key(received_at, object_id)
    body, event_ids = ndjson_body(events, ctx)
    try:
        write_events(s3, config.raw_bucket, key, body, len(events))
    except Exception as exc:  # any S3/transport failure: nothing was stored, the client retries
        return IngestOutcome(
            IngestResponse(
                503,
                {
                    "error": "storage_unavailable",
                    "message": f"the events could not be stored; nothing was kept, retry after "
                    f"{RETRY_AFTER_SECONDS} s",
                    **({"request_id": request.request_id} if request.request_id else {}),
                },
                {"retry-after": str(RETRY_AFTER_SECONDS)},
            ),
            events=len(events),
            storage_error=f"{type(exc).__name__}: {exc}",
        )
    return IngestOutcome(
        IngestResponse(
            200,
            {
                "accepted": len(events),
                "event_ids": event_ids,
                "key": key,
                "received_at": ctx.received_at,
            },
        ),
        event_key=key,
        events=len(events),
    )


def reject(
    request: IngestRequest,
    rejection: RequestRejectedError,
    config: IngestConfig,
    s3: Any,
    received_at: datetime | None = None,
) -> IngestOutcome:
    """The 4xx answer to a refused request, and its record under failed/ (unless switched off)."""
    received_at = received_at or datetime.now(UTC)
    response = IngestResponse(rejection.status, rejection.body(request.request_id), dict(rejection.headers))
    if not config.failed_records:
        return IngestOutcome(response)
    key = keys.failed_key(received_at, keys.uuid7(int(received_at.timestamp() * 1000)))
    try:
        record = failed_record(request, rejection, received_at, config.failed_record_max_bytes)
        write_failed_record(s3, config.raw_bucket, key, record)
    except Exception as exc:  # the record is diagnostics only: the client still gets its 4xx
        return IngestOutcome(response, failed_record_error=f"{type(exc).__name__}: {exc}")
    return IngestOutcome(response, failed_key=key)


def http_surface(config: IngestConfig, s3: Any) -> HttpSurface:
    """The whole HTTP API of the function: routing and CORS around handle_request and reject."""
    return HttpSurface(
        config,
        post=lambda request: handle_request(request, config, s3),
        reject=lambda request, rejection: reject(request, rejection, config, s3),
    )
