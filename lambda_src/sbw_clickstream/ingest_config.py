"""Configuration of clickstream-lambda-ingest, read from the environment and validated once per container.

Parsing and its errors are `sbw_clickstream.config`'s (shared with the ETL): every error names the
variable and says what is expected.

| variable | default | meaning |
| --- | --- | --- |
| `RAW_BUCKET` | (required) | raw bucket name, e.g. clickstream-s3-ingest |
| `AWS_REGION` | (required; set by Lambda) | region of the bucket |
| `CORS_ALLOW_ORIGINS` | `*` | comma-separated origins allowed (`https://shop.example`), or `*` |
| `MAX_BODY_BYTES` | 1048576 | largest request body after base64/gzip decoding (1..1048576) |
| `MAX_EVENTS_PER_REQUEST` | 500 | largest batch (1..500) |
| `MAX_EVENT_AGE_HOURS` | 168 | events older than this (by event_timestamp) are rejected (1..8760) |
| `MAX_FUTURE_SKEW_SECONDS` | 300 | events further in the future are rejected (0..3600) |
| `FAILED_RECORDS` | `on` | `on`/`off`: keep a record of each rejected request under failed/ |
| `FAILED_RECORD_MAX_BYTES` | 16384 | cap of one failed record (body size, SHA-256, body prefix) |
| `FAILED_RECORDS_PER_MINUTE` | 60 | failed/ records per function instance and minute (more: counted) |
| `INGEST_PATH` | `/clickstream` | the route served (POST), anything else is 404 |
| `S3_ENDPOINT_URL` | (unset) | S3 endpoint override: the local API and tests (moto); never set in AWS |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sbw_clickstream import contract
from sbw_clickstream.config import ConfigError, bucket_name, integer, matching, optional

__all__ = ["ConfigError", "IngestConfig", "load_config"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_ENDPOINT = re.compile(r"^https?://[^\s/]+/?$")
_SWITCH = {
    "on": True,
    "true": True,
    "1": True,
    "yes": True,
    "off": False,
    "false": False,
    "0": False,
    "no": False,
}


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Validated settings of the ingest function."""

    raw_bucket: str
    region: str
    cors_allow_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = contract.MAX_BODY_BYTES
    max_events_per_request: int = contract.MAX_EVENTS_PER_REQUEST
    max_event_age: timedelta = timedelta(hours=168)
    max_future_skew: timedelta = timedelta(seconds=300)
    failed_records: bool = True
    failed_record_max_bytes: int = 16 * 1024
    failed_records_per_minute: int = 60
    ingest_path: str = "/clickstream"
    s3_endpoint_url: str | None = None


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = optional(env, "CORS_ALLOW_ORIGINS") or "*"
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    if origins == ("*",):
        return origins
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ConfigError(
                "CORS_ALLOW_ORIGINS",
                f"contains {origin!r} (expected '*' or comma-separated origins such as https://shop.example)",
            )
    return origins


def load_config(env: Mapping[str, str]) -> IngestConfig:
    """Build and validate the configuration from an environment mapping (usually os.environ)."""
    switch_raw = (optional(env, "FAILED_RECORDS") or "on").lower()
    if switch_raw not in _SWITCH:
        raise ConfigError("FAILED_RECORDS", f"{switch_raw!r} is not a switch (expected on or off)")
    endpoint = optional(env, "S3_ENDPOINT_URL")
    if endpoint is not None and not _ENDPOINT.match(endpoint):
        raise ConfigError("S3_ENDPOINT_URL", f"{endpoint!r} is not an http(s) URL")
    max_body, max_events = contract.MAX_BODY_BYTES, contract.MAX_EVENTS_PER_REQUEST
    return IngestConfig(
        raw_bucket=bucket_name(env, "RAW_BUCKET"),
        region=matching(env, "AWS_REGION", _REGION, "an AWS region such as ap-southeast-1"),
        cors_allow_origins=_origins(env),
        max_body_bytes=integer(env, "MAX_BODY_BYTES", max_body, 1, max_body),
        max_events_per_request=integer(env, "MAX_EVENTS_PER_REQUEST", max_events, 1, max_events),
        max_event_age=timedelta(hours=integer(env, "MAX_EVENT_AGE_HOURS", 168, 1, 8760)),
        max_future_skew=timedelta(seconds=integer(env, "MAX_FUTURE_SKEW_SECONDS", 300, 0, 3600)),
        failed_records=_SWITCH[switch_raw],
        failed_record_max_bytes=integer(env, "FAILED_RECORD_MAX_BYTES", 16 * 1024, 4096, 4 * 1024 * 1024),
        failed_records_per_minute=integer(env, "FAILED_RECORDS_PER_MINUTE", 60, 0, 60_000),
        ingest_path=matching(env, "INGEST_PATH", _PATH, "a path such as /clickstream")
        if optional(env, "INGEST_PATH")
        else "/clickstream",
        s3_endpoint_url=endpoint,
    )
