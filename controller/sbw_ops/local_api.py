"""Local HTTP adapter: serves the real ingest handler on 127.0.0.1, like API Gateway HTTP API would.

Each HTTP request becomes an API Gateway payload format 2.0 event (headers, raw path and query,
requestContext.http.method/path/sourceIp/userAgent, request id, body base64-encoded when it is
binary or content-encoded) and goes to `sbw_clickstream.ingest_handler.lambda_handler`; the
handler's response is written back. The handler writes to the S3 endpoint given (a moto server).

    python -m sbw_ops.local_api --port 8080 --bucket clickstream-s3-ingest \
        --s3-endpoint-url http://127.0.0.1:5000

`--port 0` picks a free port; the first line printed is `local-api listening on <url>`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sbw_clickstream import ingest_handler

READY_PREFIX = "local-api listening on "
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # HTTP API's own payload limit
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object that the handler and Powertools read."""

    aws_request_id: str
    function_name: str = "clickstream-lambda-ingest"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:clickstream-lambda-ingest"
    memory_limit_in_mb: int = 256

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def _is_text(content_type: str | None, content_encoding: str | None) -> bool:
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        return False
    media = (content_type or "").split(";")[0].strip().lower()
    return media.startswith(_TEXT_TYPES) or media.endswith("+json")


def build_event(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    source_ip: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event for one HTTP request ($default stage and route)."""
    url = urlsplit(target)
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    now = datetime.now(UTC)
    request_id = request_id or str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path or "/",
        "rawQueryString": url.query,
        "headers": lowered,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": lowered.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method.upper(),
                "path": url.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if "cookie" in lowered:
        event["cookies"] = [c.strip() for c in lowered["cookie"].split(";") if c.strip()]
    if body:
        text: str | None = None
        if _is_text(lowered.get("content-type"), lowered.get("content-encoding")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


class _Handler(BaseHTTPRequestHandler):
    server_version = "sbw-local-api/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle, delayed ACKs add ~40 ms per keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # the handler logs each request as JSON
        return

    def _read_body(self) -> bytes | None:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > API_GATEWAY_MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > API_GATEWAY_MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(400, {"content-type": "application/json"}, b'{"message":"Bad Request"}')
            return
        if body is None:  # what API Gateway answers itself, before the function
            self.close_connection = True
            self._send(413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}')
            return
        event = build_event(self.command, self.path, dict(self.headers.items()), body, self.client_address[0])
        try:
            result = ingest_handler.lambda_handler(event, LambdaContext(event["requestContext"]["requestId"]))
        except Exception:  # as API Gateway does when the function fails
            ingest_handler.logger.exception("handler raised")
            self._send(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
            return
        payload = result.get("body") or ""
        raw = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode("utf-8")
        self._send(int(result.get("statusCode", 200)), result.get("headers") or {}, raw)

    def __getattr__(self, name: str) -> Any:
        # Every method (GET, TRACE, PROPFIND ...) reaches the function, as with a $default route.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


class LocalApi:
    """A running local API server (in a background thread of this process)."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=server.serve_forever, name="local-api", daemon=True)

    def start(self) -> LocalApi:
        self.thread.start()
        return self

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def handler_env(
    bucket: str,
    s3_endpoint_url: str | None,
    region: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment the handler is configured from: os.environ plus the adapter's settings."""
    env = dict(os.environ)
    env.update({"RAW_BUCKET": bucket, "AWS_REGION": region})
    if s3_endpoint_url:
        env["S3_ENDPOINT_URL"] = s3_endpoint_url
    env.update(extra or {})
    return env


def serve(
    bucket: str,
    s3_endpoint_url: str | None,
    port: int = 0,
    region: str = "ap-southeast-1",
    extra_env: Mapping[str, str] | None = None,
    s3: Any = None,
) -> LocalApi:
    """Configure the real handler and serve it on 127.0.0.1:`port` (0 = free port) in a thread."""
    ingest_handler.configure(handler_env(bucket, s3_endpoint_url, region, extra_env), s3=s3)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    return LocalApi(server).start()


def command(
    bucket: str, s3_endpoint_url: str, *extra_args: str, cors_origins: str | None = None
) -> list[str]:
    """The command line that runs this module on a free port (it prints READY_PREFIX + its URL)."""
    cmd = [sys.executable, "-m", "sbw_ops.local_api", "--port", "0", "--bucket", bucket]
    cmd += ["--s3-endpoint-url", s3_endpoint_url, *extra_args]
    return cmd + (["--cors-origins", cors_origins] if cors_origins else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the ingest Lambda handler over HTTP on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = a free port)")
    parser.add_argument("--bucket", required=True, help="raw bucket the handler writes to")
    parser.add_argument("--s3-endpoint-url", help="S3 endpoint, e.g. a moto server http://127.0.0.1:5000")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "ap-southeast-1"))
    parser.add_argument("--cors-origins", default=None, help="CORS_ALLOW_ORIGINS for the handler")
    parser.add_argument("--no-failed-records", action="store_true", help="FAILED_RECORDS=off")
    args = parser.parse_args(argv)
    if args.s3_endpoint_url:  # a local endpoint takes any credentials; never reuse real ones there
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "testing")
    extra: dict[str, str] = {}
    if args.cors_origins:
        extra["CORS_ALLOW_ORIGINS"] = args.cors_origins
    if args.no_failed_records:
        extra["FAILED_RECORDS"] = "off"
    api = serve(args.bucket, args.s3_endpoint_url, args.port, args.region, extra)
    print(f"{READY_PREFIX}{api.url}", flush=True)
    print(json.dumps({"bucket": args.bucket, "s3_endpoint_url": args.s3_endpoint_url}), file=sys.stderr)
    try:
        while api.thread.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        api.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
