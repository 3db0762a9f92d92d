"""The local HTTP adapter over real HTTP: payload 2.0 events built from real requests, S3 on moto."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sbw_ops.local_api import LocalApi, build_event

from tests.fixtures.moto import S3Bucket
from tests.ingest_support import valid_event
from tests.service_support import local_api_process, running_local_api

LAMBDA_SRC = Path(__file__).resolve().parents[1] / "lambda_src"


@pytest.fixture
def api(s3_bucket: S3Bucket) -> Iterator[LocalApi]:
    with running_local_api(s3_bucket, extra_env={"CORS_ALLOW_ORIGINS": "https://shop.example"}) as server:
        yield server


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}


def test_build_event_is_payload_2_0() -> None:
    event = build_event(
        "post",
        "/clickstream?x=1",
        {"Content-Type": "application/json", "X-Multi": "a", "x-multi": "b", "User-Agent": "UA/1"},
        b'{"a":1}',
        "198.51.100.7",
        "rid-1",
    )
    assert (
        event["version"] == "2.0" and event["rawPath"] == "/clickstream" and event["rawQueryString"] == "x=1"
    )
    assert event["headers"]["x-multi"] == "a,b"
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"], http["sourceIp"], http["userAgent"]) == (
        "POST",
        "/clickstream",
        "198.51.100.7",
        "UA/1",
    )
    assert event["requestContext"]["requestId"] == "rid-1" and event["requestContext"]["stage"] == "$default"
    assert (event["body"], event["isBase64Encoded"]) == ('{"a":1}', False)
    gz = build_event(
        "POST",
        "/clickstream",
        {"content-encoding": "gzip", "content-type": "application/json"},
        b"\x1f\x8b",
        "::1",
    )
    assert gz["isBase64Encoded"] is True and base64.b64decode(gz["body"]) == b"\x1f\x8b"
    binary = build_event("POST", "/", {"content-type": "application/json"}, b"\xff\xfe", "::1")
    assert binary["isBase64Encoded"] is True
    assert "body" not in build_event("GET", "/", {}, b"", "::1")


def test_post_single_and_gzip_batch_over_http(api: LocalApi, s3_bucket: S3Bucket) -> None:
    status, _, body = request(api.url, "POST", "/clickstream", json.dumps(valid_event()).encode(), JSON)
    assert status == 200, body
    key = json.loads(body)["key"]
    stored = json.loads(s3_bucket.read(key))
    assert stored["client_ip"] == "127.0.0.0"  # the real peer address, truncated to its /24

    batch = gzip.compress(json.dumps({"events": [valid_event(), valid_event()]}).encode())
    status, _, body = request(api.url, "POST", "/clickstream", batch, {**JSON, "Content-Encoding": "gzip"})
    assert status == 200, body
    assert json.loads(body)["accepted"] == 2
    assert len(s3_bucket.keys("events/")) == 2


def test_chunked_request_body(api: LocalApi, s3_bucket: S3Bucket) -> None:
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    payload = json.dumps(valid_event()).encode()
    conn.request(
        "POST", "/clickstream", body=iter([payload[:10], payload[10:]]), headers=JSON, encode_chunked=True
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    conn.close()
    assert len(s3_bucket.keys("events/")) == 1


def test_errors_cors_and_methods_over_http(api: LocalApi, s3_bucket: S3Bucket) -> None:
    status, headers, body = request(
        api.url, "POST", "/clickstream", b"{oops", {**JSON, "Origin": "https://shop.example"}
    )
    assert status == 400 and json.loads(body)["error"] == "malformed_json"
    assert headers["access-control-allow-origin"] == "https://shop.example"
    status, headers, _ = request(
        api.url,
        "OPTIONS",
        "/clickstream",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204 and headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert request(api.url, "TRACE", "/clickstream")[0] == 405
    assert request(api.url, "GET", "/nowhere")[0] == 404
    status, _, body = request(api.url, "POST", "/clickstream", b"<xml/>", {"Content-Type": "application/xml"})
    assert status == 415
    assert s3_bucket.keys("events/") == []
    assert len(s3_bucket.keys("failed/")) == 4  # the preflight is not a rejection


def test_oversized_request_is_refused_before_the_function(api: LocalApi) -> None:
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("POST", "/clickstream")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(11 * 1024 * 1024))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_cli_serves_the_handler(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join([str(LAMBDA_SRC), str(LAMBDA_SRC.parent / "controller")]),
        "AWS_REGION": "ap-southeast-1",
    }
    log = tmp_path / "local_api.log"
    with local_api_process(s3_bucket, log, extra_env=env, extra_args=("--no-failed-records",)) as endpoint:
        url = endpoint.removesuffix("/clickstream")
        status, _, body = request(url, "POST", "/clickstream", json.dumps(valid_event()).encode(), JSON)
        assert status == 200, body
        assert request(url, "POST", "/clickstream", b"[]", JSON)[0] == 400
        assert s3_bucket.keys("events/") == [json.loads(body)["key"]]
        assert s3_bucket.keys("failed/") == []  # --no-failed-records
