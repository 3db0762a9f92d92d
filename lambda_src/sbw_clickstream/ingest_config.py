"""Configuration of clickstream-lambda-ingest, read from the environment and validated once per container.

Every error names the variable and says what is expected, so a bad deployment fails its first
invocation with a message an operator can act on.

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
| `FAILED_RECORD_MAX_BYTES` | 262144 | cap of one failed-request record (payload truncated beyond) |
| `INGEST_PATH` | `/clickstream` | the route served (POST), anything else is 404 |
| `S3_ENDPOINT_URL` | (unset) | S3 endpoint override: the local API and tests (moto); never set in AWS |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sbw_clickstream import contract

_BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
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


class ConfigError(ValueError):
    """The environment does not describe a usable ingest function (message names the variable)."""


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
    failed_record_max_bytes: int = 256 * 1024
    ingest_path: str = "/clickstream"
    s3_endpoint_url: str | None = None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer (expected {low}..{high})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range (expected {low}..{high})")
    return value


def _required(env: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        raise ConfigError(f"{name} is not set (expected {what})")
    if not pattern.match(raw):
        raise ConfigError(f"{name}={raw!r} is not valid (expected {what})")
    return raw


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("CORS_ALLOW_ORIGINS", "").strip() or "*"
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    if origins == ("*",):
        return origins
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ConfigError(
                f"CORS_ALLOW_ORIGINS contains {origin!r} (expected '*' or comma-separated origins "
                "such as https://shop.example)"
            )
    return origins


def load_config(env: Mapping[str, str]) -> IngestConfig:
    """Build and validate the configuration from an environment mapping (usually os.environ)."""
    switch_raw = env.get("FAILED_RECORDS", "").strip().lower() or "on"
    if switch_raw not in _SWITCH:
        raise ConfigError(f"FAILED_RECORDS={switch_raw!r} is not a switch (expected on or off)")
    endpoint = env.get("S3_ENDPOINT_URL", "").strip() or None
    if endpoint is not None and not re.match(r"^https?://[^\s/]+/?$", endpoint):
        raise ConfigError(f"S3_ENDPOINT_URL={endpoint!r} is not an http(s) URL")
    return IngestConfig(
        raw_bucket=_required(
            env, "RAW_BUCKET", _BUCKET_NAME, "an S3 bucket name such as clickstream-s3-ingest"
        ),
        region=_required(env, "AWS_REGION", _REGION, "an AWS region such as ap-southeast-1"),
        cors_allow_origins=_origins(env),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", contract.MAX_BODY_BYTES, 1, contract.MAX_BODY_BYTES),
        max_events_per_request=_int(
            env, "MAX_EVENTS_PER_REQUEST", contract.MAX_EVENTS_PER_REQUEST, 1, contract.MAX_EVENTS_PER_REQUEST
        ),
        max_event_age=timedelta(hours=_int(env, "MAX_EVENT_AGE_HOURS", 168, 1, 8760)),
        max_future_skew=timedelta(seconds=_int(env, "MAX_FUTURE_SKEW_SECONDS", 300, 0, 3600)),
        failed_records=_SWITCH[switch_raw],
        failed_record_max_bytes=_int(env, "FAILED_RECORD_MAX_BYTES", 256 * 1024, 4096, 4 * 1024 * 1024),
        ingest_path=_required(env, "INGEST_PATH", _PATH, "a path such as /clickstream")
        if env.get("INGEST_PATH", "").strip()
        else "/clickstream",
        s3_endpoint_url=endpoint,
    )
