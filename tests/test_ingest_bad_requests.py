"""The bad-input corpus (tests/data/bad_requests/, one JSON file per case) through the real handler.

Every case gets its 4xx with the expected message fragment, nothing lands under events/, and the
rejected request is recorded under failed/ (with reasons and the original payload), or nothing at
all is written when FAILED_RECORDS=off.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
        assert 400 <= case["expect"]["status"] < 500 and case["expect"]["message"], path.name
        statuses.add(case["expect"]["status"])
    assert statuses == {400, 404, 405, 413, 415}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_request_is_rejected_and_recorded(path: Path, s3_bucket: S3Bucket) -> None:
    case = load_case(path)
    configure(s3_bucket, **case.get("env", {}))
    event = case_event(case)
    status, headers, body = call(event)

    assert status == case["expect"]["status"], body
    assert body is not None and body["error"] and body["request_id"] == "req-test-1"
    assert headers["content-type"] == "application/json"
    assert case["expect"]["message"] in error_text(body), body
    if status == 405:
        assert headers["allow"] == "POST, OPTIONS"
    assert s3_bucket.keys("events/") == []

    failed = s3_bucket.keys("failed/")
    assert len(failed) == 1 and FAILED_KEY.match(failed[0]), failed
    raw = s3_bucket.read(failed[0])
    assert len(raw) <= 256 * 1024
    record = json.loads(raw)
    assert (record["status"], record["error"], record["message"]) == (status, body["error"], body["message"])
    assert record["violations"] == body.get("violations", [])
    sent = event["body"] or ""
    stored = record["request"]["body_b64" if event["isBase64Encoded"] else "body"]
    if record["request"]["body_truncated"]:
        assert sent.startswith(stored) and len(sent) > len(stored)
    else:
        assert stored == sent
    assert record["request"]["method"] == case["request"]["method"]
    assert record["request"]["client_ip"] == "203.0.113.0"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_switch_off_writes_nothing(path: Path, s3_bucket: S3Bucket) -> None:
    case = load_case(path)
    configure(s3_bucket, FAILED_RECORDS="off", **case.get("env", {}))
    status, _, _ = call(case_event(case))
    assert status == case["expect"]["status"]
    assert s3_bucket.keys() == []
