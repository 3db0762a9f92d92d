"""Replay the failed/ records of a time range: re-validate each against the current contract and
ingest the events that are valid now, idempotently.

    python -m sbw_ops.replay_failed --bucket BUCKET --since 2024-06-01 --until 2024-06-02T12:00:00Z
        [--dry-run]

A failed record (`ingest_store.failed_record`) keeps the request's headers and, when it fit in the
record, its whole body (`body_truncated` false; otherwise only a prefix, its size and SHA-256: such a
record is counted as `incomplete`, never guessed at). Each complete record goes through ingest's own
steps (`ingest.accept_partial`: decoding, shape, contract, time window, clock correction) with the
record's original receive time, so a record is judged as if it arrived again under today's contract.
Events that pass are enriched as ingest would have and written as one new object under events/ (a
key of now, which the ETL's incremental listing picks up). Idempotent: an event keeps its client
`event_id`; one without gets an id derived from the record's key and its index in the request
(a UUIDv7 of the original receive time), so replaying twice stores the same ids and the warehouse,
which keeps each event_id once, loads each event once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sbw_clickstream import contract, keys
from sbw_clickstream.ingest import RequestRejectedError, accept_partial, ndjson_body
from sbw_clickstream.ingest_config import IngestConfig, load_config
from sbw_clickstream.ingest_http import IngestRequest
from sbw_clickstream.ingest_store import write_events


@dataclass
class ReplaySummary:
    """What one replay found and did (printed as JSON by the command)."""

    records: int = 0
    incomplete: int = 0  # body truncated in the record: cannot be re-validated
    still_invalid: int = 0  # rejected as a whole again
    replayed_records: int = 0
    replayed_events: int = 0
    still_invalid_events: int = 0  # events of replayed records that are still invalid
    objects_written: int = 0
    dry_run: bool = False


def parse_moment(value: str, end_of_day: bool = False) -> datetime:
    """A day (YYYY-MM-DD: its start, or the next day's start with `end_of_day`) or an RFC 3339 time."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        moment = contract.parse_timestamp(value)
        if moment.utcoffset() is None:
            raise ValueError(f"{value!r}: give an offset (Z or +08:00) or a plain day YYYY-MM-DD") from None
        return moment.astimezone(UTC)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end_of_day else start


def failed_keys(s3: Any, bucket: str, since: datetime, until: datetime) -> list[str]:
    """Keys under failed/ of every UTC day from `since` to `until` (one listing per day)."""
    found: list[str] = []
    day = since.date()
    while datetime(day.year, day.month, day.day, tzinfo=UTC) < until:
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=keys.day_prefix(keys.FAILED_PREFIX, day)):
            found.extend(item["Key"] for item in page.get("Contents", []))
        day += timedelta(days=1)
    return sorted(found)


def request_of(record: dict[str, Any], config: IngestConfig) -> IngestRequest | None:
    """The request a complete failed record describes, None when its body was truncated."""
    req = record.get("request") or {}
    if req.get("body_truncated") or req.get("method") != "POST":
        return None
    body = req.get("body_b64") if req.get("is_base64_encoded") else req.get("body")
    headers = {str(k).lower(): str(v) for k, v in (req.get("headers") or {}).items()}
    return IngestRequest(
        method="POST",
        path=config.ingest_path,
        headers=headers,
        body=body,
        is_base64_encoded=bool(req.get("is_base64_encoded")),
        source_ip=req.get("client_ip"),
        user_agent=headers.get("user-agent"),
        request_id=record.get("request_id"),
    )


def derived_event_id(key: str, index: int, received_at: datetime) -> str:
    """The id of an event sent without one: the same for the same record and index, every replay."""
    rand = int.from_bytes(hashlib.sha256(f"{key}#{index}".encode()).digest()[:10], "big")
    return str(keys.uuid7_from(int(received_at.timestamp() * 1000), rand))


def replay_record(
    key: str, record: dict[str, Any], config: IngestConfig
) -> tuple[list[dict[str, Any]], Any, int] | None:
    """(now-valid events with their ids, enrichment context, still-invalid count), or None when the
    record is incomplete; RequestRejectedError when the whole request is still refused."""
    request = request_of(record, config)
    if request is None:
        return None
    received_at = contract.parse_timestamp(record["received_at"])
    accepted = accept_partial(request, config, received_at)
    rejected = set(accepted.rejected)
    indexes = [i for i in range(len(accepted.events) + len(rejected)) if i not in rejected]
    events = []
    for index, event in zip(indexes, accepted.events, strict=True):
        if event.get("event_id") is None:
            event = {**event, "event_id": derived_event_id(key, index, received_at)}
        events.append(event)
    return events, accepted.ctx, len(rejected)


def replay(
    s3: Any, config: IngestConfig, since: datetime, until: datetime, dry_run: bool = False
) -> ReplaySummary:
    """Replay every failed record received in [since, until)."""
    summary = ReplaySummary(dry_run=dry_run)
    for key in failed_keys(s3, config.raw_bucket, since, until):
        record = json.loads(s3.get_object(Bucket=config.raw_bucket, Key=key)["Body"].read())
        received_at = contract.parse_timestamp(record["received_at"])
        if not since <= received_at < until:
            continue
        summary.records += 1
        try:
            result = replay_record(key, record, config)
        except RequestRejectedError:
            summary.still_invalid += 1
            continue
        if result is None:
            summary.incomplete += 1
            continue
        events, ctx, invalid = result
        summary.replayed_records += 1
        summary.replayed_events += len(events)
        summary.still_invalid_events += invalid
        if dry_run:
            continue
        body, _ = ndjson_body(events, ctx)
        now = datetime.now(UTC)
        write_events(s3, config.raw_bucket, keys.event_key(now, keys.uuid7()), body, len(events))
        summary.objects_written += 1
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", default=os.environ.get("RAW_BUCKET"), help="the raw bucket (RAW_BUCKET)")
    parser.add_argument("--since", required=True, help="first receive time: YYYY-MM-DD or RFC 3339")
    parser.add_argument("--until", required=True, help="end (excluded): YYYY-MM-DD (whole day) or RFC 3339")
    parser.add_argument("--dry-run", action="store_true", help="count what would be replayed, write nothing")
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "RAW_BUCKET": args.bucket or "",
        "AWS_REGION": os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "ap-southeast-1",
    }
    try:
        config = load_config(env)
        since, until = parse_moment(args.since), parse_moment(args.until, end_of_day=True)
    except ValueError as exc:
        print(f"replay_failed: {exc}", file=sys.stderr)
        return 2
    if until <= since:
        print(f"replay_failed: --until {args.until} is not after --since {args.since}", file=sys.stderr)
        return 2
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or config.s3_endpoint_url
    s3 = boto3.client("s3", region_name=config.region, endpoint_url=endpoint or None)
    print(json.dumps(asdict(replay(s3, config, since, until, args.dry_run))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
