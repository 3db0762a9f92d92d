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

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sbw_clickstream import keys
from sbw_clickstream.contract import Violation
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
    MAX_VIOLATIONS_REPORTED,
    HttpSurface,
    IngestOutcome,
    IngestRequest,
    IngestResponse,
    RequestRejectedError,
    check_content_type,
    decode_body,
    gunzip_limited,
)
from sbw_clickstream.ingest_store import FailedRecordBudget, failed_record, write_events, write_failed_record
from sbw_clickstream.ingest_validate import Body, clock_skew, events_of_body, parse_body, validate_batch

__all__ = [
    "MAX_USER_AGENT_CHARS",
    "RETRY_AFTER_SECONDS",
    "Accepted",
    "FailedRecordBudget",
    "HttpSurface",
    "IngestOutcome",
    "IngestRequest",
    "IngestResponse",
    "RequestContext",
    "RequestRejectedError",
    "accept",
    "accept_partial",
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
    "parse_body",
    "reject",
    "request_context",
    "serialise_ndjson",
    "truncate_ip",
    "validate_batch",
]

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `accept` keeps of a request: its valid events and context, and the rejected indexes."""

    events: list[dict[str, Any]]
    ctx: RequestContext
    rejected: list[int] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    body: Body | None = None


def accept(
    request: IngestRequest, config: IngestConfig, received_at: datetime
) -> tuple[list[dict[str, Any]], RequestContext]:
    """Decode, parse and validate a POST body: its events and enrichment context, or RequestRejectedError
    (all or nothing; `accept_partial` keeps a batch's valid events)."""
    accepted = accept_partial(request, config, received_at)
    if accepted.rejected:
        raise _all_rejected(accepted.violations, len(accepted.events) + len(accepted.rejected), True)
    return accepted.events, accepted.ctx


def _all_rejected(violations: list[Violation], total: int, batch: bool) -> RequestRejectedError:
    count = len({v.index for v in violations})
    what = f"{count} of {total} events are invalid" if batch else "the event is invalid"
    return RequestRejectedError(400, "validation_failed", f"{what}; nothing was stored", violations)


def accept_partial(request: IngestRequest, config: IngestConfig, received_at: datetime) -> Accepted:
    """Decode, parse and validate a POST body, each event on its own: the valid events (in order) and
    the indexes of the invalid ones; RequestRejectedError when the request as a whole is refused
    (its shape, or no valid event at all)."""
    gzipped = check_content_type(request.headers)
    data = decode_body(request, gzipped, config.max_body_bytes)
    body = parse_body(data, config.max_events_per_request)
    skew = clock_skew(body.sent_at, received_at)
    violations = validate_batch(body.events, received_at, config, b"\\u" in data, skew)
    ctx = request_context(request, received_at, skew)
    if not violations:
        return Accepted(body.events, ctx, body=body)
    bad = sorted({v.index for v in violations if v.index is not None})
    if len(bad) == len(body.events) or not body.batch:
        raise _all_rejected(violations, len(body.events), body.batch)
    rejected = set(bad)
    valid = [event for index, event in enumerate(body.events) if index not in rejected]
    return Accepted(valid, ctx, bad, violations, body)


def handle_request(
    request: IngestRequest,
    config: IngestConfig,
    s3: Any,
    now: datetime | None = None,
    budget: FailedRecordBudget | None = None,
) -> IngestOutcome:
    """Answer a POST on the ingest path: accept, write; record a rejection under failed/ when switched on.

    A batch with some invalid events stores the valid ones and answers 200 with the rejected indexes
    and their violations; the rejected events are recorded under failed/ (`budget` caps those writes
    per function instance). Routing and CORS are the HTTP surface's (`ingest_http.HttpSurface`).
    """
    received_at = now or datetime.now(UTC)
    try:
        accepted = accept_partial(request, config, received_at)
    except RequestRejectedError as rejection:
        return reject(request, rejection, config, s3, received_at, budget)
    events, ctx = accepted.events, accepted.ctx
    object_id = keys.uuid7(int(received_at.timestamp() * 1000))
    key = keys.event_key(received_at, object_id)
    body, event_ids = ndjson_body(events, ctx)
    try:
        write_events(s3, config.raw_bucket, key, body, len(events))
    except Exception as exc:  # any S3/transport failure: the PUT may or may not have landed
        return IngestOutcome(
            IngestResponse(
                503,
                {
                    "error": "storage_unavailable",
                    "message": "the events could not be confirmed as stored (they may or may not have "
                    "been kept); retrying the same request with the same event_id values is safe: the "
                    f"warehouse keeps each event_id once. Retry after {RETRY_AFTER_SECONDS} s",
                    **({"request_id": request.request_id} if request.request_id else {}),
                },
                {"retry-after": str(RETRY_AFTER_SECONDS)},
            ),
            events=len(events),
            storage_error=f"{type(exc).__name__}: {exc}",
        )
    answer: dict[str, Any] = {
        "accepted": len(events),
        "event_ids": event_ids,
        "key": key,
        "received_at": ctx.received_at,
    }
    if not accepted.rejected:
        return IngestOutcome(IngestResponse(200, answer), event_key=key, events=len(events))
    answer["message"] = (
        f"{len(accepted.rejected)} of {len(accepted.rejected) + len(events)} events are invalid; "
        f"the other {len(events)} were stored"
    )
    answer["rejected"] = accepted.rejected
    answer["violations"] = [v.as_dict() for v in accepted.violations[:MAX_VIOLATIONS_REPORTED]]
    if len(accepted.violations) > MAX_VIOLATIONS_REPORTED:
        answer["violations_truncated"] = len(accepted.violations)
    recorded = _record_rejected_events(request, answer["message"], accepted, config, s3, received_at, budget)
    return IngestOutcome(
        IngestResponse(200, answer),
        event_key=key,
        events=len(events),
        failed_key=recorded.failed_key,
        failed_record_error=recorded.failed_record_error,
        failed_record_dropped=recorded.failed_record_dropped,
    )


def _record_rejected_events(
    request: IngestRequest,
    message: str,
    accepted: Accepted,
    config: IngestConfig,
    s3: Any,
    received_at: datetime,
    budget: FailedRecordBudget | None,
) -> IngestOutcome:
    """The failed/ record of a partly accepted batch: its rejected events (as a batch a replay can
    send again, with the original indexes), the violations and the request metadata."""
    assert accepted.body is not None
    envelope: dict[str, Any] = {"events": [accepted.body.events[i] for i in accepted.rejected]}
    if accepted.body.sent_at is not None:
        envelope["sent_at"] = accepted.body.sent_at
    rejection = RequestRejectedError(200, "events_rejected", message, accepted.violations)
    only_rejected = dataclasses.replace(
        request,
        body=json.dumps(envelope, ensure_ascii=False, separators=(",", ":")),
        is_base64_encoded=False,
        headers={k: v for k, v in request.headers.items() if k != "content-encoding"},
    )
    return reject(only_rejected, rejection, config, s3, received_at, budget, indexes=accepted.rejected)


def reject(
    request: IngestRequest,
    rejection: RequestRejectedError,
    config: IngestConfig,
    s3: Any,
    received_at: datetime | None = None,
    budget: FailedRecordBudget | None = None,
    indexes: list[int] | None = None,
) -> IngestOutcome:
    """The 4xx answer to a refused request, and its record under failed/ (unless switched off, or the
    instance's budget of failed records is spent: then only counted)."""
    received_at = received_at or datetime.now(UTC)
    response = IngestResponse(rejection.status, rejection.body(request.request_id), dict(rejection.headers))
    if not config.failed_records:
        return IngestOutcome(response)
    if budget is not None and not budget.take():
        return IngestOutcome(response, failed_record_dropped=True)
    key = keys.failed_key(received_at, keys.uuid7(int(received_at.timestamp() * 1000)))
    try:
        record = failed_record(request, rejection, received_at, config.failed_record_max_bytes, indexes)
        write_failed_record(s3, config.raw_bucket, key, record)
    except Exception as exc:  # the record is diagnostics only: the client still gets its 4xx
        return IngestOutcome(response, failed_record_error=f"{type(exc).__name__}: {exc}")
    return IngestOutcome(response, failed_key=key)


def http_surface(config: IngestConfig, s3: Any, budget: FailedRecordBudget | None = None) -> HttpSurface:
    """The whole HTTP API of the function: routing and CORS around handle_request and reject.

    `budget`: the function instance's cap on failed/ writes (one per container, shared by threads).
    """
    return HttpSurface(
        config,
        post=lambda request: handle_request(request, config, s3, budget=budget),
        reject=lambda request, rejection: reject(request, rejection, config, s3, budget=budget),
    )
