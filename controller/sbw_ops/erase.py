"""Erase one person's events from the raw bucket: the S3 half of playbooks/erase_subject.yml.

The warehouse half (`dw_erase_subject`, migration V010) deletes the rows, rebuilds the rollup days
and returns the raw objects that held them. This module then, for each of those objects, rewrites
it without the subject's events (or deletes it when nothing else is left) and deletes every other
version of it (the bucket is versioned: an old version would let a backfill bring the events back);
and deletes every `failed/` record (a rejected request, kept for diagnosis) that mentions the
subject. Events that stay keep their ids: a legacy event without `event_id` gets the id the ETL
derived for it (its line number changes in the rewritten object), so a later backfill loads
nothing twice and nothing erased.

    python -m sbw_ops.erase --bucket B --kind user_id --value V --keys-file keys.txt
prints a JSON summary: {"rewritten", "deleted", "unchanged", "failed_deleted"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import boto3
from sbw_clickstream.etl_read import GZIP_MAGIC, ObjectError, derive_event_id, gunzip, parse_events
from sbw_clickstream.keys import FAILED_PREFIX

KINDS = ("user_id", "client_id")
_MAX_BYTES = 64 * 1024 * 1024


def _matches(event: Any, kind: str, value: str) -> bool:
    return isinstance(event, dict) and event.get(kind) == value


def _delete_other_versions(s3: Any, bucket: str, key: str, keep: str | None) -> None:
    """Delete every version (and delete marker) of `key` but `keep`."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if item["Key"] == key and item["VersionId"] != keep:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=item["VersionId"])


def rewrite_object(s3: Any, bucket: str, key: str, kind: str, value: str) -> str:
    """'rewritten', 'deleted' (nothing else was in it) or 'unchanged' (not the subject's, or gone)."""
    try:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return "unchanged"
    if data.startswith(GZIP_MAGIC):
        data = gunzip(data, _MAX_BYTES)
    events = parse_events(data)
    kept = []
    for line, event in events:
        if _matches(event, kind, value):
            continue
        if isinstance(event, dict) and "event_id" not in event:
            event = {**event, "event_id": derive_event_id(key, line)}  # the id it was loaded with
        kept.append(event)
    if len(kept) == len(events):
        return "unchanged"
    if not kept:
        s3.delete_object(Bucket=bucket, Key=key)
        _delete_other_versions(s3, bucket, key, None)
        return "deleted"
    body = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in kept)
    put = s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/x-ndjson")
    _delete_other_versions(s3, bucket, key, put.get("VersionId"))
    return "rewritten"


def erase_failed(s3: Any, bucket: str, value: str) -> int:
    """Delete (all versions of) every failed/ record whose body contains the identifier as a JSON
    string; the records are rejected requests, kept for diagnosis only."""
    needle = json.dumps(value).encode("utf-8")
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=FAILED_PREFIX):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if needle in body or needle.replace(b'"', b'\\"') in body:
                s3.delete_object(Bucket=bucket, Key=item["Key"])
                _delete_other_versions(s3, bucket, item["Key"], None)
                deleted += 1
    return deleted


def erase(s3: Any, bucket: str, kind: str, value: str, keys: Iterable[str]) -> dict[str, int]:
    """Rewrite the raw objects of `keys` without the subject, then clean failed/."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if not value:
        raise ValueError(f"the {kind} to erase is empty")
    counts = {"rewritten": 0, "deleted": 0, "unchanged": 0}
    for key in keys:
        try:
            counts[rewrite_object(s3, bucket, key, kind, value)] += 1
        except ObjectError as exc:
            raise ObjectError(f"{key}: cannot be rewritten ({exc}); nothing of it was changed") from None
    counts["failed_deleted"] = erase_failed(s3, bucket, value)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--value", required=True)
    parser.add_argument("--keys-file", required=True, help="raw keys from dw_erase_subject, one a line")
    args = parser.parse_args(argv)
    with open(args.keys_file, encoding="utf-8") as handle:
        keys = [line.strip() for line in handle if line.strip()]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "ap-southeast-1"
    s3 = boto3.client("s3", region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    try:
        counts = erase(s3, args.bucket, args.kind, args.value, keys)
    except (ValueError, ObjectError) as exc:
        print(f"erase: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
