"""What ingest writes to the raw bucket: the events object under events/, and the record of a rejected
request under failed/ (reasons, request metadata and the original payload, capped in size).
"""

from __future__ import annotations

import json
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
