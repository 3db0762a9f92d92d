"""The bad-input corpus (tests/data/bad_requests/, one JSON file per case) through the real handler.

Every case gets its 4xx with the expected message fragment, nothing lands under events/, and the
rejected request is recorded under failed/ (with reasons, the body's size and SHA-256 and a prefix
of it), or nothing at all is written when FAILED_RECORDS=off. A batch with valid events among the
invalid ones (`expect.status` 200, `expect.rejected`) stores the valid ones in one events/ object and
records only the rejected events, as a batch a replay can send again.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.moto import S3Bucket
from tests.ingest_support import BAD_REQUESTS, call, case_event, configure, error_text, load_case

CASES = sorted(BAD_REQUESTS.glob("*.json"))
FAILED_KEY = re.compile(r"^failed/\d{4}/\d{2}/\d{2}/request-[0-9a-f-]{36}\.json$")


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 60
    statuses = set()
    for path in CASES:
        case = load_case(path)
        assert set(case) <= {"description", "request", "expect", "env"}, path.name
        assert {"method", "path", "headers", "isBase64Encoded"} <= set(case["request"]), path.name
        expect = case["expect"]
        assert (400 <= expect["status"] < 500) or expect.get("rejected"), path.name
        assert expect["message"], path.name
        statuses.add(expect["status"])
    assert statuses == {200, 400, 404, 405, 413, 415}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_request_is_rejected_and_recorded(path: Path, s3_bucket: S3Bucket) -> None:
    case = load_case(path)
    configure(s3_bucket, **case.get("env", {}))
    event = case_event(case)
    status, headers, body = call(event)

    assert status == case["expect"]["status"], body
    assert body is not None
    assert headers["content-type"] == "application/json"
    assert case["expect"]["message"] in error_text(body), body
    if status == 405:
        assert headers["allow"] == "POST, OPTIONS"
    if status == 200:
        _assert_partly_stored(case, event, body, s3_bucket)
        return
    assert body["error"] and body["request_id"] == "req-test-1"
    assert s3_bucket.keys("events/") == []

    failed = s3_bucket.keys("failed/")
    assert len(failed) == 1 and FAILED_KEY.match(failed[0]), failed
    raw = s3_bucket.read(failed[0])
    assert len(raw) <= 16 * 1024  # FAILED_RECORD_MAX_BYTES
    record = json.loads(raw)
    assert (record["status"], record["error"], record["message"]) == (status, body["error"], body["message"])
    assert record["violations"] == body.get("violations", [])
    sent = event["body"] or ""
    stored = record["request"]["body_b64" if event["isBase64Encoded"] else "body"]
    assert record["request"]["body_bytes"] == len(sent.encode("utf-8", "surrogatepass"))
    assert (
        record["request"]["body_sha256"] == hashlib.sha256(sent.encode("utf-8", "surrogatepass")).hexdigest()
    )
    if record["request"]["body_truncated"]:
        assert sent.startswith(stored) and len(sent) > len(stored)
    else:
        assert stored == sent
    assert record["request"]["method"] == case["request"]["method"]
    assert record["request"]["client_ip"] == "203.0.113.0"


def _sent_events(event: dict[str, Any]) -> list[Any]:
    text = event["body"] or ""
    if event["isBase64Encoded"]:
        text = gzip.decompress(base64.b64decode(text)).decode()
    return json.loads(text)["events"]


def _assert_partly_stored(
    case: dict[str, Any], event: dict[str, Any], body: dict[str, Any], s3_bucket: S3Bucket
) -> None:
    """A batch with valid events: those stored in one object, the rejected ones recorded by index."""
    rejected = case["expect"]["rejected"]
    sent = _sent_events(event)
    assert body["rejected"] == rejected and {v["index"] for v in body["violations"]} == set(rejected)
    assert body["accepted"] == len(sent) - len(rejected) == len(body["event_ids"])
    (key,) = s3_bucket.keys("events/")
    assert len(s3_bucket.read(key).splitlines()) == body["accepted"]
    (failed,) = s3_bucket.keys("failed/")
    record = json.loads(s3_bucket.read(failed))
    assert (record["status"], record["error"], record["indexes"]) == (200, "events_rejected", rejected)
    assert record["violations"] == body["violations"]
    assert json.loads(record["request"]["body"]) == {"events": [sent[i] for i in rejected]}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_switch_off_writes_nothing(path: Path, s3_bucket: S3Bucket) -> None:
    case = load_case(path)
    configure(s3_bucket, FAILED_RECORDS="off", **case.get("env", {}))
    status, _, _ = call(case_event(case))
    assert status == case["expect"]["status"]
    assert s3_bucket.keys("failed/") == []
    assert len(s3_bucket.keys("events/")) == (1 if status == 200 else 0)
