"""Replay of failed/ after a contract change (issue 15 §4): playbooks/replay_failed.yml run by
ansible-playbook (connection local) with the newer contract, against S3 on moto, then the real ETL
into PostgreSQL: the now-valid records reach the warehouse once, even when replayed twice; a
flood of junk grows failed/ by at most the configured budget while good requests are stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sbw_clickstream import keys
from sbw_clickstream.etl import run_etl
from sbw_ops import replay_failed

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.ingest_support import apigw_event, call, configure, newer_lambda_src, valid_event
from tests.service_support import running_local_api, stored_events
from tests.test_etl_support import connector, etl_config

REPO = Path(__file__).resolve().parents[1]
JSON = {"Content-Type": "application/json"}


def _playbook(s3: S3Bucket, pythonpath: str, **extra: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    variables = {
        "sbw_replay_raw_bucket": s3.name,
        "sbw_replay_since": (today - timedelta(days=1)).isoformat(),
        "sbw_replay_until": today.isoformat(),  # a plain day: that whole day included
        "sbw_replay_pythonpath": pythonpath,
        "sbw_aws_endpoint_url": s3.endpoint_url or "",
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "playbooks/replay_failed.yml",
            "-e",
            json.dumps(variables),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    tasks = report["plays"][-1]["tasks"]  # the replay play (after the stacks' facts play)
    summary = tasks[-1]["hosts"]["localhost"]["msg"]
    changed = tasks[-2]["hosts"]["localhost"]["changed"]
    return {**summary, "changed": changed}


def test_replay_after_a_contract_change_loads_the_records_once_even_twice(
    s3_bucket: S3Bucket, dw_db: PgDatabase, tmp_path: Path
) -> None:
    configure(s3_bucket)
    with_id = valid_event(event_id=str(keys.uuid7()), campaign_id="spring")
    without_id = valid_event(campaign_id="spring")
    good = [valid_event(event_id=str(keys.uuid7())) for _ in range(2)]
    status, _, body = call(apigw_event(json.dumps({"events": [good[0], with_id, good[1], without_id]})))
    assert status == 200 and body is not None and body["rejected"] == [1, 3]  # today's contract
    status, _, _ = call(apigw_event(json.dumps(valid_event(campaign_id="autumn"))))
    assert status == 400
    status, _, _ = call(apigw_event("{still junk"))
    assert status == 400
    assert len(s3_bucket.keys("failed/")) == 3

    newer = f"{REPO / 'controller'}:{newer_lambda_src(tmp_path)}"
    dry = _playbook(s3_bucket, newer, sbw_replay_dry_run="true")
    assert (dry["replayed_events"], dry["objects_written"], dry["changed"]) == (3, 0, False)
    first = _playbook(s3_bucket, newer)
    assert (first["records"], first["replayed_records"], first["still_invalid"]) == (3, 2, 1)
    assert (first["replayed_events"], first["objects_written"], first["changed"]) == (3, 2, True)
    second = _playbook(s3_bucket, newer)
    assert second["replayed_events"] == 3  # replayed again: the same ids

    lines = stored_events(s3_bucket)
    assert len(lines) == 2 + 3 + 3
    config = etl_config(dw_db, s3_bucket.name)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert summary["status"] == "succeeded", summary
    rows = dw_db.query("SELECT event_id::text, extra ->> 'campaign_id' FROM clickstream_events")
    assert len(rows) == 5  # 2 stored at first + 3 replayed, each once
    ids = {event_id for event_id, _ in rows}
    assert {good[0]["event_id"], good[1]["event_id"], with_id["event_id"]} <= ids
    assert sorted(c for _, c in rows if c) == ["autumn", "spring", "spring"]


def test_replay_with_todays_contract_keeps_them_failed(s3_bucket: S3Bucket) -> None:
    configure(s3_bucket)
    call(apigw_event(json.dumps(valid_event(campaign_id="x"))))
    config = replay_failed.load_config({"RAW_BUCKET": s3_bucket.name, "AWS_REGION": "ap-southeast-1"})
    now = datetime.now(UTC)
    summary = replay_failed.replay(
        s3_bucket.client, config, now - timedelta(hours=1), now + timedelta(hours=1)
    )
    assert (summary.records, summary.still_invalid, summary.objects_written) == (1, 1, 0)
    assert s3_bucket.keys("events/") == []


def test_replay_rejects_a_bad_range() -> None:
    assert replay_failed.main(["--bucket", "b-1234", "--since", "2024-06-02", "--until", "2024-06-01"]) == 2
    assert replay_failed.main(["--bucket", "b-1234", "--since", "soon", "--until", "2024-06-01"]) == 2


@pytest.mark.parametrize("cap", [25])
def test_ten_thousand_junk_requests_are_bounded_and_good_ones_stored(s3_bucket: S3Bucket, cap: int) -> None:
    with running_local_api(s3_bucket, extra_env={"FAILED_RECORDS_PER_MINUTE": str(cap)}) as api:
        url = api.url + "/clickstream"
        good_ids: list[str] = []
        errors: list[str] = []
        lock = threading.Lock()

        def send(worker: int) -> None:
            session = requests.Session()
            for n in range(5000):
                if n % 100 == 0:  # one good request in a hundred
                    event = valid_event(event_id=str(keys.uuid7()))
                    answer = session.post(url, json={"events": [event]}, timeout=30)
                    with lock:
                        if answer.status_code == 200:
                            good_ids.append(event["event_id"])
                        else:
                            errors.append(f"good request: {answer.status_code} {answer.text[:200]}")
                answer = session.post(url, data=b'{"junk": ' + str(n).encode(), headers=JSON, timeout=30)
                if answer.status_code != 400:
                    with lock:
                        errors.append(f"junk request: {answer.status_code}")

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(w,)) for w in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        minutes = int((time.monotonic() - started) // 60) + 2  # budget windows the run can touch
    assert errors == []
    failed = s3_bucket.keys("failed/")
    assert 0 < len(failed) <= cap * minutes, (len(failed), minutes)
    assert len(good_ids) == 100
    assert sorted(e["event_id"] for e in stored_events(s3_bucket)) == sorted(good_ids)
