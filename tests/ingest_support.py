"""Helpers shared by the ingest test modules: API Gateway events, handler set-up, valid events."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sbw_clickstream import contract, ingest_handler

from tests.fixtures.moto import S3Bucket

REPO = Path(__file__).resolve().parents[1]

BAD_REQUESTS = Path(__file__).parent / "data" / "bad_requests"
REGION = "ap-southeast-1"


def now_text(delta: timedelta = timedelta(0)) -> str:
    return contract.format_timestamp(datetime.now(UTC) + delta)


def valid_event(**patch: Any) -> dict[str, Any]:
    event = {
        "event_timestamp": now_text(-timedelta(seconds=30)),
        "event_name": "product_view",
        "client_id": "client-1",
        "session_id": "session-1",
        "context_product_id": "P-1",
        "context_product_price": 10.0,
    }
    event.update(patch)
    return event


def apigw_event(
    body: str | bytes | None,
    *,
    method: str = "POST",
    path: str = "/clickstream",
    headers: dict[str, str] | None = None,
    is_base64: bool = False,
    source_ip: str = "203.0.113.77",
    user_agent: str = "pytest-agent/1.0",
) -> dict[str, Any]:
    """A minimal but complete API Gateway HTTP API payload 2.0 event."""
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode()
        is_base64 = True
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "user-agent": user_agent}
        if headers is None
        else headers,
        "requestContext": {
            "requestId": "req-test-1",
            "stage": "$default",
            "http": {"method": method, "path": path, "sourceIp": source_ip, "userAgent": user_agent},
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def configure(bucket: S3Bucket | str, s3: Any = None, **env: str) -> None:
    """Configure the real handler for a test bucket (moto client unless `s3` is given)."""
    name = bucket if isinstance(bucket, str) else bucket.name
    client = s3 if s3 is not None else bucket.client  # type: ignore[union-attr]
    ingest_handler.configure({"RAW_BUCKET": name, "AWS_REGION": REGION, **env}, s3=client)


def call(event: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    """Invoke the handler: (status, headers, decoded JSON body or None)."""
    result = ingest_handler.lambda_handler(event, None)
    body = json.loads(result["body"]) if result["body"] else None
    headers = {name.lower(): value for name, value in result["headers"].items()}  # names are case-blind
    return result["statusCode"], headers, body


def load_case(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _substitute(text: str) -> str:
    for token, delta in (
        ("$NOW_PLUS_10M", timedelta(minutes=10)),
        ("$NOW_MINUS_8D", -timedelta(days=8)),
        ("$NOW_MINUS_2H", -timedelta(hours=2)),
        ("$NOW", -timedelta(seconds=10)),
    ):
        text = text.replace(token, now_text(delta))
    return text


def _generated(spec: dict[str, Any]) -> tuple[str, bool]:
    kind = spec["kind"]
    if kind == "events":
        return json.dumps({"events": [valid_event() for _ in range(spec["count"])]}), False
    if kind == "padding":
        head = json.dumps(valid_event())[:-1] + ', "context_product_name": "'
        text = head + "x" * (spec["bytes"] - len(head) - 2) + '"}'
        assert len(text.encode()) == spec["bytes"]
        if spec.get("base64"):
            return base64.b64encode(text.encode()).decode(), True
        return text, False
    if kind == "gzip_zeros":
        return base64.b64encode(gzip.compress(b"0" * spec["bytes"])).decode(), True
    raise ValueError(f"unknown generator {kind}")


def case_event(case: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway event of a bad-request corpus case (tokens like $NOW resolved)."""
    req = case["request"]
    is_base64 = bool(req.get("isBase64Encoded"))
    body: str | None
    if "generate" in req:
        body, is_base64 = _generated(req["generate"])
    elif "body_b64" in req:
        body = req["body_b64"]
    elif "body" in req:
        body = _substitute(req["body"])
        if req.get("gzip_body"):
            body = base64.b64encode(gzip.compress(body.encode())).decode()
            is_base64 = True
    else:
        body = None
    return apigw_event(
        body, method=req["method"], path=req["path"], headers=dict(req["headers"]), is_base64=is_base64
    )


def error_text(body: dict[str, Any] | None) -> str:
    """Message plus every violation message, to look for a case's expected fragment."""
    if not body:
        return ""
    parts = [body.get("message", "")]
    parts += [v["message"] for v in body.get("violations", [])]
    return "\n".join(parts)


def newer_lambda_src(tmp_path: Path) -> Path:
    """A copy of lambda_src/ with one contract change, an optional `campaign_id` property: the code a
    contract fix deploys (for the schema-evolution and replay suites)."""
    root = tmp_path / "newer_lambda_src"
    shutil.copytree(REPO / "lambda_src", root, ignore=shutil.ignore_patterns("__pycache__"))
    schema_path = next((root / "sbw_clickstream" / "schemas").glob("clickstream-event.*.json"))
    schema = json.loads(schema_path.read_text())
    schema["properties"]["campaign_id"] = {"type": ["string", "null"], "maxLength": 64}
    schema_path.write_text(json.dumps(schema, indent=2))
    return root
