"""The real Lambda handler against S3 on a moto server: writes, 503 on S3 failure, CORS, config, logs."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sbw_clickstream import contract, ingest_handler, keys

from tests.fixtures.moto import S3Bucket
from tests.ingest_support import apigw_event, call, configure, valid_event

LAMBDA_SRC = Path(__file__).resolve().parents[1] / "lambda_src"


class RecordingS3:
    """Wraps a real client and records which operations the code calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.client, name)


class FailingS3:
    def put_object(self, **_: Any) -> None:
        raise ConnectionError("S3 is unreachable")


def test_single_event_is_one_json_object(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    event = valid_event(user_id="u-7")
    before = datetime.now(UTC)
    status, _, body = call(apigw_event(json.dumps(event)))
    assert status == 200, body
    assert body is not None and body["accepted"] == 1
    assert s3_bucket.keys() == [body["key"]]
    day, object_id = keys.parse_event_key(body["key"]) or (None, None)
    assert day == before.date() or day == datetime.now(UTC).date()
    assert object_id is not None and object_id.version == 7

    stored = json.loads(s3_bucket.read(body["key"]))  # one JSON document, not a list
    assert contract.validate_stored_event(stored) == []
    assert {k: stored[k] for k in event} == event
    assert stored["event_id"] == body["event_ids"][0]
    assert (stored["user_login_state"], stored["identity_source"]) == ("logged_in", "cognito")
    assert (stored["client_ip"], stored["user_agent"]) == ("203.0.113.0", "pytest-agent/1.0")
    assert stored["received_at"] == body["received_at"]
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=body["key"])
    assert head["ContentType"] == "application/x-ndjson"
    assert head["Metadata"] == {"event-count": "1", "schema-version": contract.SCHEMA_VERSION}


def test_batch_is_one_ndjson_object_in_order(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    events = [valid_event(session_id=f"s-{i}") for i in range(100)]
    status, _, body = call(apigw_event(json.dumps({"events": events})))
    assert status == 200 and body is not None and body["accepted"] == 100
    lines = s3_bucket.read(body["key"]).decode().splitlines()
    stored = [json.loads(line) for line in lines]
    assert [e["session_id"] for e in stored] == [f"s-{i}" for i in range(100)]
    assert [e["event_id"] for e in stored] == body["event_ids"]
    assert len(set(body["event_ids"])) == 100


def test_gzip_body_as_api_gateway_sends_it(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    events = [valid_event(context_product_name="Ünïcode ☕") for _ in range(3)]
    raw = gzip.compress(json.dumps({"events": events}, ensure_ascii=False).encode())
    headers = {"content-type": "application/json; charset=utf-8", "content-encoding": "gzip"}
    status, _, body = call(apigw_event(base64.b64encode(raw).decode(), headers=headers, is_base64=True))
    assert status == 200, body
    assert "☕".encode() in s3_bucket.read(body["key"])


def test_client_event_id_is_kept(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    eid = str(keys.uuid7())
    status, _, body = call(apigw_event(json.dumps(valid_event(event_id=eid))))
    assert status == 200 and body is not None and body["event_ids"] == [eid]


def test_s3_failure_is_503_with_retry_hint_and_nothing_stored(s3_bucket: S3Bucket) -> None:
    configure("bucket-that-does-not-exist-" + s3_bucket.name[-8:], s3=s3_bucket.client)
    status, headers, body = call(apigw_event(json.dumps({"events": [valid_event(), valid_event()]})))
    assert status == 503
    assert headers["retry-after"] == "1"
    assert body is not None and body["error"] == "storage_unavailable" and "retry" in body["message"]
    assert s3_bucket.keys() == []

    configure(s3_bucket, s3=FailingS3())
    status, headers, _ = call(apigw_event(json.dumps(valid_event())))
    assert status == 503 and headers["retry-after"] == "1"
    assert s3_bucket.keys() == []


def json_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The handler's log records as the JSON lines Powertools writes."""
    formatter = ingest_handler.logger.registered_formatter
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "clickstream-lambda-ingest"]


def test_failed_record_write_failure_still_answers_4xx(
    s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    configure(s3_bucket, s3=FailingS3())
    status, _, body = call(apigw_event("{not json"))
    assert status == 400 and body is not None and body["error"] == "malformed_json"
    logged = json_logs(caplog)
    assert logged[-1]["level"] == "WARNING" and "S3 is unreachable" in logged[-1]["cause"]


def test_only_put_object_is_used(s3_bucket: S3Bucket) -> None:
    recorder = RecordingS3(s3_bucket.client)
    configure(s3_bucket, s3=recorder)
    call(apigw_event(json.dumps(valid_event())))
    call(apigw_event("[]"))
    call(apigw_event(json.dumps(valid_event()), method="GET"))
    assert set(recorder.calls) == {"put_object"}
    assert len(s3_bucket.keys("events/")) == 1 and len(s3_bucket.keys("failed/")) == 2


def test_cors_for_the_shop_origin_and_preflight(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket, CORS_ALLOW_ORIGINS="https://shop.example")
    shop = {"content-type": "application/json", "origin": "https://shop.example"}
    status, headers, _ = call(apigw_event(json.dumps(valid_event()), headers=shop))
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://shop.example" and headers["vary"] == "origin"

    other = {"content-type": "application/json", "origin": "https://evil.example"}
    _, headers, _ = call(apigw_event(json.dumps(valid_event()), headers=other))
    assert "access-control-allow-origin" not in headers

    status, headers, body = call(
        apigw_event(None, method="OPTIONS", headers={"origin": "https://shop.example"})
    )
    assert status == 204 and body is None
    assert headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert "content-encoding" in headers["access-control-allow-headers"].lower().split(",")
    _, headers, _ = call(
        apigw_event("{}", headers={"origin": "https://shop.example"})
    )  # errors carry CORS too
    assert headers["access-control-allow-origin"] == "https://shop.example"
    assert len(s3_bucket.keys("events/")) == 2  # CORS only shapes headers: the API does not police origins


def test_time_window_is_configurable(s3_bucket: S3Bucket) -> None:
    old = contract.format_timestamp(datetime.now(UTC) - timedelta(hours=30))
    configure(s3_bucket)
    assert call(apigw_event(json.dumps(valid_event(event_timestamp=old))))[0] == 200
    configure(s3_bucket, MAX_EVENT_AGE_HOURS="24")
    status, _, body = call(apigw_event(json.dumps(valid_event(event_timestamp=old))))
    assert status == 400 and body is not None
    assert (
        body["violations"][0]["pointer"] == "/event_timestamp" and "24 h" in body["violations"][0]["message"]
    )


def test_logs_are_json_with_correlation_id(s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture) -> None:
    configure(s3_bucket)
    call(apigw_event(json.dumps(valid_event())))
    line = json_logs(caplog)[-1]
    assert line["correlation_id"] == "req-test-1"
    assert line["status"] == 200 and line["events"] == 1 and line["key"].startswith("events/")
    assert line["service"] == "clickstream-lambda-ingest"


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAW_", "AWS_LAMBDA"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={
            **base,
            "PYTHONPATH": os.pathsep.join([str(LAMBDA_SRC), str(LAMBDA_SRC.parent / "controller")]),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_configuration_fails_the_cold_start_naming_the_variable() -> None:
    code = "import sbw_clickstream.ingest_handler"
    result = _python(
        code, {"AWS_LAMBDA_FUNCTION_NAME": "clickstream-lambda-ingest", "AWS_REGION": "ap-southeast-1"}
    )
    assert result.returncode != 0
    assert "ConfigError: RAW_BUCKET: is not set" in result.stderr
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "f",
        "AWS_REGION": "ap-southeast-1",
        "RAW_BUCKET": "b-1",
        "MAX_BODY_BYTES": "x",
    }
    result = _python(code, env)
    assert "MAX_BODY_BYTES: 'x' is not an integer" in result.stderr
    ok = _python(code, {**env, "MAX_BODY_BYTES": "1000"})
    assert ok.returncode == 0, ok.stderr


def test_cold_import_does_not_load_boto3_or_jsonschema() -> None:
    code = (
        "import sys, sbw_clickstream.ingest_handler; "
        "print(sorted(m for m in ('boto3', 'jsonschema') if m in sys.modules))"
    )
    result = _python(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_runtime_is_built_once() -> None:
    ingest_handler.configure({"RAW_BUCKET": "b-1", "AWS_REGION": "ap-southeast-1"})
    first = ingest_handler.runtime()
    assert ingest_handler.runtime() is first
    assert first.s3.meta.region_name == "ap-southeast-1"
    assert ingest_handler.handler is ingest_handler.lambda_handler  # the name the stack configures
