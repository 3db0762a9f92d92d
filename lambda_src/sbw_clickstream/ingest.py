"""clickstream-lambda-ingest as plain functions: request in, response out, S3 client passed in.

Order of checks for a request: route (404/405, OPTIONS preflight) -> content type and encoding (415)
-> body decoding: base64, gzip, size (400/413) -> JSON shape: one event or {"events": [...]}
(400/413) -> the contract and the time window for every event, all or nothing (400) -> enrichment
-> one NDJSON object under events/ (200) or, when S3 fails, 503 with Retry-After and nothing written.
Every rejected request is recorded under failed/ (size-capped, reasons + original payload) unless
switched off. The handler (`ingest_handler.py`) only adapts API Gateway events and logs outcomes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sbw_clickstream import contract, keys
from sbw_clickstream.contract import Violation
from sbw_clickstream.ingest_config import IngestConfig

JSON_CONTENT_TYPE = "application/json"
NDJSON_CONTENT_TYPE = "application/x-ndjson"
RETRY_AFTER_SECONDS = 1
MAX_USER_AGENT_CHARS = 512
MAX_VIOLATIONS_REPORTED = 1000
ALLOWED_METHODS = "POST, OPTIONS"
ALLOWED_REQUEST_HEADERS = "content-type, content-encoding"
# Request headers kept in a failed-request record (never cookies or authorization).
RECORDED_HEADERS = ("content-type", "content-encoding", "content-length", "origin", "referer", "user-agent")


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """The parts of an HTTP request ingest looks at (header names lower-case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: str | None
    is_base64_encoded: bool = False
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def from_apigw_v2(cls, event: Mapping[str, Any]) -> IngestRequest:
        """From an API Gateway HTTP API payload format 2.0 event (the stage prefix is removed)."""
        ctx = event.get("requestContext") or {}
        http = ctx.get("http") or {}
        path = event.get("rawPath") or http.get("path") or "/"
        stage = ctx.get("stage")
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :]
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        return cls(
            method=str(http.get("method") or "GET").upper(),
            path=path,
            headers=headers,
            body=event.get("body"),
            is_base64_encoded=bool(event.get("isBase64Encoded")),
            source_ip=http.get("sourceIp"),
            user_agent=http.get("userAgent") or headers.get("user-agent"),
            request_id=ctx.get("requestId"),
        )


@dataclass(frozen=True, slots=True)
class IngestResponse:
    """Status, JSON body (None for 204) and headers of the answer."""

    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)

    def to_apigw_v2(self) -> dict[str, Any]:
        """As an API Gateway HTTP API payload 2.0 response."""
        headers = dict(self.headers)
        if self.body is None:
            return {"statusCode": self.status, "headers": headers, "body": "", "isBase64Encoded": False}
        headers["content-type"] = JSON_CONTENT_TYPE
        return {
            "statusCode": self.status,
            "headers": headers,
            "body": json.dumps(self.body, ensure_ascii=False, separators=(",", ":")),
            "isBase64Encoded": False,
        }


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What happened to one request: the response plus what the handler logs."""

    response: IngestResponse
    event_key: str | None = None
    events: int = 0
    failed_key: str | None = None
    storage_error: str | None = None
    failed_record_error: str | None = None


class RequestRejectedError(Exception):
    """A request that gets a 4xx: status, machine-readable error code, message, violations."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        violations: list[Violation] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.violations = violations or []
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.violations:
            body["violations"] = [v.as_dict() for v in self.violations[:MAX_VIOLATIONS_REPORTED]]
            if len(self.violations) > MAX_VIOLATIONS_REPORTED:
                body["violations_truncated"] = len(self.violations)
        if request_id:
            body["request_id"] = request_id
        return body


# --- routing and CORS --------------------------------------------------------------------------


def cors_headers(origin: str | None, config: IngestConfig) -> dict[str, str]:
    """CORS response headers for a request from `origin` (none when the origin is not allowed)."""
    if config.cors_allow_origins == ("*",):
        return {"access-control-allow-origin": "*", "access-control-expose-headers": "retry-after"}
    if origin and origin.rstrip("/") in config.cors_allow_origins:
        return {
            "access-control-allow-origin": origin,
            "access-control-expose-headers": "retry-after",
            "vary": "origin",
        }
    return {"vary": "origin"}


def check_route(request: IngestRequest, config: IngestConfig) -> None:
    """404 for any other path, 405 (with Allow) for any other method than POST/OPTIONS."""
    if request.path != config.ingest_path:
        raise RequestRejectedError(
            404, "not_found", f"no route for {request.path}; the API serves {config.ingest_path}"
        )
    if request.method not in ("POST", "OPTIONS"):
        raise RequestRejectedError(
            405,
            "method_not_allowed",
            f"method {request.method} is not allowed on {config.ingest_path}; use POST",
            headers={"allow": ALLOWED_METHODS},
        )


def preflight_response(request: IngestRequest, config: IngestConfig) -> IngestResponse:
    """204 answer to a CORS preflight (OPTIONS) on the ingest path."""
    headers = cors_headers(request.headers.get("origin"), config)
    if "access-control-allow-origin" in headers:
        headers.update(
            {
                "access-control-allow-methods": ALLOWED_METHODS,
                "access-control-allow-headers": ALLOWED_REQUEST_HEADERS,
                "access-control-max-age": "86400",
            }
        )
    headers["allow"] = ALLOWED_METHODS
    return IngestResponse(204, None, headers)


# --- body decoding -----------------------------------------------------------------------------


def check_content_type(headers: Mapping[str, str]) -> bool:
    """415 unless `Content-Type: application/json` (charset utf-8 if any); True when gzip-encoded."""
    raw = headers.get("content-type")
    if not raw:
        raise RequestRejectedError(
            415, "unsupported_media_type", "Content-Type is missing; send application/json"
        )
    media, _, params = raw.partition(";")
    if media.strip().lower() != JSON_CONTENT_TYPE:
        raise RequestRejectedError(
            415,
            "unsupported_media_type",
            f"Content-Type {media.strip()!r} is not supported; send application/json",
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestRejectedError(
                415, "unsupported_media_type", f"charset {value.strip()!r} is not supported; send UTF-8"
            )
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise RequestRejectedError(
        415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported; use gzip or none"
    )


def _too_large(size: str, limit: int) -> RequestRejectedError:
    return RequestRejectedError(
        413, "payload_too_large", f"body is {size}; the limit is {limit} bytes after decoding"
    )


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing to inflate past `limit` bytes (no zip bombs)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RequestRejectedError(400, "bad_encoding", f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise _too_large(f"more than {limit} bytes after gunzip", limit)
    if not inflater.eof:
        raise RequestRejectedError(400, "bad_encoding", "body is not valid gzip: truncated stream")
    if inflater.unused_data:
        raise RequestRejectedError(400, "bad_encoding", "body is not valid gzip: data after the gzip stream")
    return out


def decode_body(request: IngestRequest, gzipped: bool, limit: int) -> bytes:
    """The request body as bytes: base64-decoded when API Gateway encoded it, gunzipped, size-checked."""
    body = request.body
    if not body:
        raise RequestRejectedError(
            400, "empty_body", 'the request body is empty; send one event or {"events": [...]}'
        )
    wire_limit = limit if not gzipped else limit + 1024  # a gzip member never beats its input by much
    if request.is_base64_encoded:
        if len(body) > (wire_limit + 2) // 3 * 4 + 4:
            raise _too_large(f"{len(body) * 3 // 4} bytes", limit)
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestRejectedError(400, "bad_encoding", f"body is not valid base64: {exc}") from None
    else:
        if len(body) > wire_limit:
            raise _too_large(f"{len(body)} characters", limit)
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestRejectedError(400, "bad_encoding", "body is not valid UTF-8 text") from None
    if gzipped:
        if len(data) > wire_limit:
            raise _too_large(f"{len(data)} bytes compressed", limit)
        data = gunzip_limited(data, limit)
    elif len(data) > limit:
        raise _too_large(f"{len(data)} bytes", limit)
    if not data.strip():
        raise RequestRejectedError(
            400, "empty_body", 'the request body is empty; send one event or {"events": [...]}'
        )
    return data


# --- JSON shape --------------------------------------------------------------------------------


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_events(data: bytes, max_events: int) -> tuple[list[Any], bool]:
    """The events of a body (one event object, or {"events": [...]}) and whether it was a batch."""
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
        return [doc], False
    events = doc["events"]
    extra = sorted(k for k in doc if k != "events")
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
    return events, True


# --- validation --------------------------------------------------------------------------------


def validate_batch(
    events: list[Any], received_at: datetime, config: IngestConfig, text_has_escapes: bool = True
) -> list[Violation]:
    """Every violation of every event (contract, time window, duplicate ids); empty means accept all.

    `text_has_escapes=False` (the body held no `\\u` escape) lets the contract skip its string scan.
    """
    found: list[Violation] = []
    newest = received_at + config.max_future_skew
    oldest = received_at - config.max_event_age
    seen_ids: dict[str, int] = {}
    for index, event in enumerate(events):
        problems = contract.validate_event(event, index, check_strings=text_has_escapes)
        if problems:
            found.extend(problems)
            continue
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


# --- enrichment --------------------------------------------------------------------------------


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


def request_context(request: IngestRequest, received_at: datetime) -> RequestContext:
    """Server time, user agent (capped) and truncated client IP of a request."""
    agent = request.user_agent
    if agent is not None:
        agent = agent[:MAX_USER_AGENT_CHARS] or None
    return RequestContext(contract.format_timestamp(received_at), agent, truncate_ip(request.source_ip))


def enrich_event(event: dict[str, Any], ctx: RequestContext, new_id: str | None = None) -> dict[str, Any]:
    """A copy of a valid client event plus enrichment; client-sent values are kept as sent.

    Derived when absent or null: `event_id` (UUIDv7; `new_id` when given), `user_login_state`
    (logged_in when user_id is set, else guest), `identity_source` (cognito when user_id is set,
    else anonymous).
    """
    out = dict(event)
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


# --- writing -----------------------------------------------------------------------------------


def write_events(s3: Any, bucket: str, key: str, body: bytes, count: int) -> None:
    """One PUT for the whole request (raises whatever the S3 client raises)."""
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=NDJSON_CONTENT_TYPE,
        Metadata={"event-count": str(count), "schema-version": contract.SCHEMA_VERSION},
    )


def failed_record(
    request: IngestRequest, rejection: RequestRejectedError, received_at: datetime, max_bytes: int
) -> bytes:
    """The JSON record of a rejected request: reasons, request metadata, original payload (capped)."""
    body = request.body or ""
    record: dict[str, Any] = {
        "received_at": contract.format_timestamp(received_at),
        "request_id": request.request_id,
        "status": rejection.status,
        "error": rejection.error,
        "message": rejection.message,
        "violations": [v.as_dict() for v in rejection.violations[:MAX_VIOLATIONS_REPORTED]],
        "schema_version": contract.SCHEMA_VERSION,
        "request": {
            "method": request.method,
            "path": request.path,
            "headers": {k: request.headers[k][:1024] for k in RECORDED_HEADERS if k in request.headers},
            "client_ip": truncate_ip(request.source_ip),
            "is_base64_encoded": request.is_base64_encoded,
            "body_chars": len(body),
        },
    }
    encoded = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
    room = max_bytes - len(encoded) - 64
    payload_key = "body_b64" if request.is_base64_encoded else "body"
    payload = body
    if not request.is_base64_encoded:
        payload = body.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    # ensure_ascii may expand each character up to 12 bytes: cut until it fits.
    truncated = False
    while payload and len(json.dumps(payload, ensure_ascii=True)) > room:
        truncated = True
        payload = payload[: max(0, min(len(payload) // 2, room))]
    record["request"][payload_key] = payload
    record["request"]["body_truncated"] = truncated
    while len(encoded := json.dumps(record, ensure_ascii=True, separators=(",", ":"))) > max_bytes:
        if record["violations"]:  # a huge violation list: keep what fits
            record["violations"] = record["violations"][: len(record["violations"]) // 2]
            record["violations_truncated"] = True
        else:
            record["request"][payload_key] = ""
            record["request"]["body_truncated"] = True
            break
    return encoded.encode("ascii")


def write_failed_record(s3: Any, bucket: str, key: str, record: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=record, ContentType=JSON_CONTENT_TYPE)


# --- the whole request -------------------------------------------------------------------------


def accept(
    request: IngestRequest, config: IngestConfig, received_at: datetime
) -> tuple[list[dict[str, Any]], RequestContext]:
    """Decode, parse and validate a POST body: its events and enrichment context, or RequestRejectedError."""
    gzipped = check_content_type(request.headers)
    data = decode_body(request, gzipped, config.max_body_bytes)
    events, batch = parse_events(data, config.max_events_per_request)
    violations = validate_batch(events, received_at, config, b"\\u" in data)
    if violations:
        count = len({v.index for v in violations})
        what = f"{count} of {len(events)} events are invalid" if batch else "the event is invalid"
        raise RequestRejectedError(400, "validation_failed", f"{what}; nothing was stored", violations)
    return events, request_context(request, received_at)


def handle_request(
    request: IngestRequest, config: IngestConfig, s3: Any, now: datetime | None = None
) -> IngestOutcome:
    """Answer one request: route, accept, write; record rejections under failed/ when switched on."""
    received_at = now or datetime.now(UTC)
    cors = cors_headers(request.headers.get("origin"), config)
    try:
        check_route(request, config)
        if request.method == "OPTIONS":
            return IngestOutcome(preflight_response(request, config))
        events, ctx = accept(request, config, received_at)
    except RequestRejectedError as rejection:
        return _rejected(request, rejection, config, s3, received_at, cors)
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
                {**cors, "retry-after": str(RETRY_AFTER_SECONDS)},
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
            cors,
        ),
        event_key=key,
        events=len(events),
    )


def _rejected(
    request: IngestRequest,
    rejection: RequestRejectedError,
    config: IngestConfig,
    s3: Any,
    received_at: datetime,
    cors: dict[str, str],
) -> IngestOutcome:
    response = IngestResponse(
        rejection.status, rejection.body(request.request_id), {**cors, **rejection.headers}
    )
    if not config.failed_records:
        return IngestOutcome(response)
    key = keys.failed_key(received_at, keys.uuid7(int(received_at.timestamp() * 1000)))
    try:
        record = failed_record(request, rejection, received_at, config.failed_record_max_bytes)
        write_failed_record(s3, config.raw_bucket, key, record)
    except Exception as exc:  # the record is diagnostics only: the client still gets its 4xx
        return IngestOutcome(response, failed_record_error=f"{type(exc).__name__}: {exc}")
    return IngestOutcome(response, failed_key=key)
