"""Erase one person's events from the raw bucket: the S3 half of playbooks/erase_subject.yml.

The warehouse half (`dw_erase_subject`, migration V010) deletes the rows, rebuilds the rollup days
and returns the raw objects that held them. This module then, for each of those objects, rewrites
it without the subject's events (or deletes it when nothing else is left) and deletes every other
version of it (the bucket is versioned: an old version would let a backfill bring the events back);
and deletes every `failed/` record (a rejected request, kept for diagnosis) that mentions the
subject. Events that stay keep their ids: a legacy event without `event_id` gets the id the ETL
derived for it (its line number changes in the rewritten object), so a later backfill loads
nothing twice and nothing erased.

The playbook runs it through the module sbw.ops.erase_objects (check mode counts, changes nothing);
`erase()` returns {"rewritten", "deleted", "unchanged", "failed_deleted"}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

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


def rewrite_object(s3: Any, bucket: str, key: str, kind: str, value: str, dry_run: bool = False) -> str:
    """'rewritten', 'deleted' (nothing else was in it) or 'unchanged' (not the subject's, or gone).

    `dry_run`: say which it would be, change nothing.
    """
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
    if dry_run:
        return "deleted" if not kept else "rewritten"
    if not kept:
        s3.delete_object(Bucket=bucket, Key=key)
        _delete_other_versions(s3, bucket, key, None)
        return "deleted"
    body = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in kept)
    put = s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/x-ndjson")
    _delete_other_versions(s3, bucket, key, put.get("VersionId"))
    return "rewritten"


def erase_failed(s3: Any, bucket: str, value: str, dry_run: bool = False) -> int:
    """Delete (all versions of) every failed/ record whose body contains the identifier as a JSON
    string; the records are rejected requests, kept for diagnosis only. `dry_run`: only count them."""
    needle = json.dumps(value).encode("utf-8")
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=FAILED_PREFIX):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if needle in body or needle.replace(b'"', b'\\"') in body:
                deleted += 1
                if dry_run:
                    continue
                s3.delete_object(Bucket=bucket, Key=item["Key"])
                _delete_other_versions(s3, bucket, item["Key"], None)
    return deleted


def erase(
    s3: Any, bucket: str, kind: str, value: str, keys: Iterable[str], dry_run: bool = False
) -> dict[str, int]:
    """Rewrite the raw objects of `keys` without the subject, then clean failed/ (`dry_run`: count only)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if not value:
        raise ValueError(f"the {kind} to erase is empty")
    counts = {"rewritten": 0, "deleted": 0, "unchanged": 0}
    for key in keys:
        try:
            counts[rewrite_object(s3, bucket, key, kind, value, dry_run)] += 1
        except ObjectError as exc:
            raise ObjectError(f"{key}: cannot be rewritten ({exc}); nothing of it was changed") from None
    counts["failed_deleted"] = erase_failed(s3, bucket, value, dry_run)
    return counts
