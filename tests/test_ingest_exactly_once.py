"""Issue 15 at the ingest function (real handler, S3 on a moto server): client ids kept, S3 budget
inside the function timeout, an honest 503, partial batches, the client clock corrected, and the
failed/ records capped and rate-limited per function instance."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml
from sbw_clickstream import contract, ingest_handler, keys
from sbw_clickstream.ingest_store import FailedRecordBudget

from tests.fixtures.moto import S3Bucket
from tests.ingest_support import apigw_event, call, configure, valid_event

REPO = Path(__file__).resolve().parents[1]


def stored(bucket: S3Bucket) -> list[dict[str, Any]]:
    return [json.loads(line) for key in bucket.keys("events/") for line in bucket.read(key).splitlines()]


def test_s3_client_worst_case_fits_inside_the_function_timeout() -> None:
    timeout = cfn_yaml.load(str(REPO / "cloudformation" / "ingest.yaml"))["Resources"]["Function"][
        "Properties"
    ]["Timeout"]
    worst = ingest_handler.s3_worst_case_seconds()
    assert worst + ingest_handler.ANSWER_MARGIN_SECONDS <= timeout, (worst, timeout)
    client = ingest_handler.make_s3_client(
        ingest_handler.load_config({"RAW_BUCKET": "b-1234", "AWS_REGION": "ap-southeast-1"})
    )
    cfg = client.meta.config
    assert (cfg.connect_timeout, cfg.read_timeout) == (
        ingest_handler.S3_CONNECT_TIMEOUT_SECONDS,
        ingest_handler.S3_READ_TIMEOUT_SECONDS,
    )
    assert cfg.retries["total_max_attempts"] == ingest_handler.S3_TOTAL_ATTEMPTS


class LandsThenFails:
    """The PUT reaches S3 (the object is written), then the answer is lost."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put_object(self, **kwargs: Any) -> None:
        self.client.put_object(**kwargs)
        raise TimeoutError("read timeout after the PUT landed")


def test_503_says_a_retry_with_the_same_ids_is_safe_and_is(s3_bucket: S3Bucket) -> None:
    events = [valid_event(event_id=str(keys.uuid7())), valid_event(event_id=str(keys.uuid7()))]
    configure(s3_bucket, s3=LandsThenFails(s3_bucket.client))
    status, _, body = call(apigw_event(json.dumps({"events": events})))
    assert status == 503 and body is not None
    assert "may or may not" in body["message"] and "same event_id" in body["message"]
    assert "nothing was kept" not in body["message"]
    configure(s3_bucket)
    status, _, body = call(apigw_event(json.dumps({"events": events})))
    assert status == 200 and body is not None
    # Two objects (the landed PUT and the retry), the same two ids: the warehouse keeps each once.
    rows = stored(s3_bucket)
    assert len(s3_bucket.keys("events/")) == 2
    assert sorted(r["event_id"] for r in rows) == sorted(2 * [e["event_id"] for e in events])


def test_partial_batch_stores_the_valid_events_and_answers_the_rejected_index(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    good = [valid_event(event_id=str(keys.uuid7())) for _ in range(4)]
    bad = valid_event(event_name="Not Valid")
    batch = [*good[:2], bad, *good[2:]]
    status, _, body = call(apigw_event(json.dumps({"events": batch})))
    assert status == 200 and body is not None
    assert body["accepted"] == 4 and body["rejected"] == [2]
    assert [v["index"] for v in body["violations"]] == [2] and body["violations"][0][
        "pointer"
    ] == "/event_name"
    assert body["event_ids"] == [e["event_id"] for e in good]
    assert sorted(r["event_id"] for r in stored(s3_bucket)) == sorted(e["event_id"] for e in good)
    (failed,) = s3_bucket.keys("failed/")
    record = json.loads(s3_bucket.read(failed))
    assert record["indexes"] == [2] and json.loads(record["request"]["body"]) == {"events": [bad]}


def test_batch_with_no_valid_event_is_400_and_nothing_stored(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    status, _, body = call(apigw_event(json.dumps({"events": [valid_event(session_id="")] * 2})))
    assert status == 400 and body is not None and "2 of 2 events are invalid" in body["message"]
    assert s3_bucket.keys("events/") == []


def test_a_clock_two_hours_fast_is_corrected_not_rejected(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    fast = timedelta(hours=2)
    now = datetime.now(UTC)
    tz = contract.parse_timestamp("2024-01-01T00:00:00+07:00").tzinfo
    sent_at = contract.format_timestamp((now + fast).astimezone(tz), utc=False, timespec="milliseconds")
    happened = now - timedelta(seconds=40)
    client_time = contract.format_timestamp(
        (happened + fast).astimezone(tz), utc=False, timespec="milliseconds"
    )
    status, _, body = call(apigw_event(json.dumps({"events": [valid_event(event_timestamp=client_time)]})))
    assert status == 400 and body is not None and "in the future" in json.dumps(body)  # today's rule

    batch = {"events": [valid_event(event_timestamp=client_time)], "sent_at": sent_at}
    status, _, body = call(apigw_event(json.dumps(batch)))
    assert status == 200, body
    (row,) = stored(s3_bucket)
    assert row["client_event_timestamp"] == client_time
    corrected = contract.parse_timestamp(row["event_timestamp"])
    assert abs((corrected - happened).total_seconds()) < 5  # received - (sent - event), network time only
    assert row["event_timestamp"].endswith("+07:00")  # still in the visitor's offset
    assert not contract.validate_stored_event(row)


def test_sent_at_must_be_a_timestamp(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    status, _, body = call(apigw_event(json.dumps({"events": [valid_event()], "sent_at": "yesterday"})))
    assert status == 400 and body is not None and body["violations"][0]["pointer"] == "/sent_at"


def test_failed_records_are_capped_with_size_and_sha256(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket, FAILED_RECORD_MAX_BYTES="4096")
    junk = "x" * 200_000
    status, _, _ = call(apigw_event(junk))
    assert status == 400
    (key,) = s3_bucket.keys("failed/")
    raw = s3_bucket.read(key)
    assert len(raw) <= 4096
    request = json.loads(raw)["request"]
    assert request["body_bytes"] == 200_000 and request["body_truncated"]
    assert request["body_sha256"] == hashlib.sha256(junk.encode()).hexdigest()
    assert junk.startswith(request["body"]) and request["body"]


def test_failed_record_budget_per_minute() -> None:
    now = [0.0]
    budget = FailedRecordBudget(3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 59.9
    assert not budget.take()
    now[0] = 60.0
    assert budget.take()
    assert (budget.written, budget.dropped) == (4, 3)


def test_failed_records_over_the_budget_are_counted_not_written(s3_bucket: S3Bucket, capsys: Any) -> None:
    configure(s3_bucket, FAILED_RECORDS_PER_MINUTE="2")
    statuses = [call(apigw_event("{junk"))[0] for _ in range(6)]
    assert statuses == [400] * 6
    assert len(s3_bucket.keys("failed/")) <= 2 * 2  # at most two windows of the minute crossed
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    dropped = sum(_total(m.get("FailedRecordsDropped", 0)) for m in metrics)
    written = sum(_total(m.get("FailedRecordsWritten", 0)) for m in metrics)
    assert written == len(s3_bucket.keys("failed/")) and written + dropped == 6


def _total(value: float | list[float]) -> float:
    return sum(value) if isinstance(value, list) else value
