"""What ingest writes to the raw bucket: the events object under events/, and the record of a rejected
request under failed/ (reasons, request metadata, the size and SHA-256 of the body and a prefix of it,
capped in size), at most FAILED_RECORDS_PER_MINUTE records per function instance and UTC minute.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sbw_clickstream import contract
from sbw_clickstream.ingest_enrich import truncate_ip
from sbw_clickstream.ingest_http import (
    JSON_CONTENT_TYPE,
    MAX_VIOLATIONS_REPORTED,
    IngestRequest,
    RequestRejectedError,
)

NDJSON_CONTENT_TYPE = "application/x-ndjson"
# Request headers kept in a failed-request record (never cookies or authorization).
RECORDED_HEADERS = ("content-type", "content-encoding", "content-length", "origin", "referer", "user-agent")


def write_events(s3: Any, bucket: str, key: str, body: bytes, count: int) -> None:
    """One PUT for the whole request (raises whatever the S3 client raises)."""
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=NDJSON_CONTENT_TYPE,
        Metadata={"event-count": str(count), "schema-version": contract.SCHEMA_VERSION},
    )


class FailedRecordBudget:
    """At most `per_minute` failed/ records per function instance in each minute (fixed windows of the
    monotonic clock), so a flood of junk costs a bounded number of PUTs and bytes; what is over the
    budget is only counted (`dropped`, the handler's FailedRecordsDropped metric). Thread-safe (the
    local API serves requests on threads)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0
        self.written = 0
        self.dropped = 0

    def take(self) -> bool:
        """True when one more record may be written now (and count it), False when over budget."""
        with self._lock:
            window = int(self._clock() // 60)
            if window != self._window:
                self._window, self._used = window, 0
            if self._used >= self.per_minute:
                self.dropped += 1
                return False
            self._used += 1
            self.written += 1
            return True


def failed_record(
    request: IngestRequest,
    rejection: RequestRejectedError,
    received_at: datetime,
    max_bytes: int,
    indexes: list[int] | None = None,
) -> bytes:
    """The JSON record of a rejected request: reasons, request metadata, the body's size and SHA-256
    and as much of the body as fits in `max_bytes` (a prefix; `body_truncated` says so). `indexes`:
    for the rejected events of a partly accepted batch, their indexes in the original request."""
    body = request.body or ""
    raw = body.encode("utf-8", "surrogatepass")
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
            "body_bytes": len(raw),
            "body_sha256": hashlib.sha256(raw).hexdigest(),
        },
    }
    if indexes is not None:
        record["indexes"] = indexes
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
