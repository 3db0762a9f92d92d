"""The HTTP side of clickstream-lambda-ingest: the request and response it sees, routing and CORS (on
AWS Lambda Powertools' `APIGatewayHttpResolver` with `CORSConfig`), and decoding the body (content
type, base64, gzip, size) into bytes.

Every refusal is a `RequestRejectedError` carrying its 4xx status, an error code and a message that
says what to send instead; `sbw_clickstream.ingest` turns it into the response and the failed record.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, CORSConfig, Response

from sbw_clickstream.contract import Violation
from sbw_clickstream.ingest_config import IngestConfig

JSON_CONTENT_TYPE = "application/json"
MAX_VIOLATIONS_REPORTED = 1000
ALLOWED_METHODS = "POST, OPTIONS"
PREFLIGHT_MAX_AGE_SECONDS = 86400


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

    def json_text(self) -> str:
        """The body as compact JSON ("" for no body)."""
        if self.body is None:
            return ""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":"))


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


# --- routing and CORS: Powertools' event handler ------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What happened to one request: the response plus what the handler logs."""

    response: IngestResponse
    event_key: str | None = None
    events: int = 0
    failed_key: str | None = None
    storage_error: str | None = None
    failed_record_error: str | None = None
    # The failed/ record was not written: this instance's budget (FAILED_RECORDS_PER_MINUTE) was spent.
    failed_record_dropped: bool = False


def cors_config(config: IngestConfig) -> CORSConfig:
    """The CORS answer for the shop: its origins (or *), our two request headers, Retry-After readable."""
    first, *extra = config.cors_allow_origins
    return CORSConfig(
        allow_origin=first,
        extra_origins=extra,
        allow_headers=["Content-Encoding"],
        expose_headers=["Retry-After"],
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
    )


class HttpSurface:
    """The ingest route on Powertools' `APIGatewayHttpResolver`: POST on the ingest path, its CORS
    preflight, 405 for any other method there, 404 for any other path; CORS by `CORSConfig`.

    `post` answers a POST, `reject` answers (and records) a refused request; the outcome of the last
    request is kept for the handler's log line. One surface per thread: the resolver holds the
    current event (the local API serves requests on several threads).
    """

    def __init__(
        self,
        config: IngestConfig,
        post: Callable[[IngestRequest], IngestOutcome],
        reject: Callable[[IngestRequest, RequestRejectedError], IngestOutcome],
    ) -> None:
        self.config = config
        self.cors = cors_config(config)
        self.app = APIGatewayHttpResolver(cors=self.cors)
        self._post, self._reject = post, reject
        self.outcome: IngestOutcome | None = None
        # Caches must not mix one origin's answer into another's when the origin is not `*`.
        self._vary = {} if config.cors_allow_origins == ("*",) else {"vary": "origin"}
        self.app.post(config.ingest_path)(self._on_post)
        self.app.route(config.ingest_path, method="OPTIONS")(self._on_preflight)
        self.app.not_found(self._on_not_found)

    def resolve(self, event: Mapping[str, Any], context: Any) -> tuple[dict[str, Any], IngestOutcome]:
        self.outcome = None
        result = self.app.resolve(dict(event), context)
        assert self.outcome is not None
        return result, self.outcome

    def _request(self) -> IngestRequest:
        return IngestRequest.from_apigw_v2(self.app.current_event.raw_event)

    def _answer(self, outcome: IngestOutcome) -> Response:
        self.outcome = outcome
        answer = outcome.response
        return Response(
            status_code=answer.status,
            content_type=JSON_CONTENT_TYPE if answer.body is not None else None,
            body=answer.json_text(),
            headers={**self._vary, **answer.headers},
        )

    def _on_post(self) -> Response:
        return self._answer(self._post(self._request()))

    def _on_preflight(self) -> Response:
        request = self._request()
        headers = {"allow": ALLOWED_METHODS}
        if self.cors.allowed_origin(request.headers.get("origin", "")) is not None:
            headers["access-control-allow-methods"] = ALLOWED_METHODS
        return self._answer(IngestOutcome(IngestResponse(204, None, headers)))

    def _on_not_found(self, _: Exception) -> Response:
        request = self._request()
        path = self.config.ingest_path
        if request.path != path:
            rejection = RequestRejectedError(
                404, "not_found", f"no route for {request.path}; the API serves {path}"
            )
        else:
            rejection = RequestRejectedError(
                405,
                "method_not_allowed",
                f"method {request.method} is not allowed on {path}; use POST",
                headers={"allow": ALLOWED_METHODS},
            )
        return self._answer(self._reject(request, rejection))


# --- body decoding ------------------------------------------------------------------------------


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
