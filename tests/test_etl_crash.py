"""Crash injection: SIGKILL the ETL process at random moments, many times; nothing lost or doubled.

The ETL runs as a real process (`python -m sbw_clickstream.etl_handler`, the Lambda handler with
a local context) against the real warehouse and the moto S3 server, while new objects keep
arriving (some written "late", inside the look-back window). After ~25 kills at random points a
final run must leave the warehouse exactly equal to the source.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.test_etl_support import Source, advisory_locks_held, wait_until, warehouse_rows

REPO = Path(__file__).resolve().parents[1]
KILLS = 25


def _env(db: PgDatabase, bucket: S3Bucket) -> dict[str, str]:
    assert db.etl is not None and bucket.endpoint_url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWH_", "ETL_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO / "lambda_src"), str(REPO / "controller"), str(REPO)]),
            "DWH_HOST": db.host,
            "DWH_PORT": str(db.port),
            "DWH_USER": db.etl.user,
            "DWH_PASSWORD": db.etl.password,
            "DWH_DATABASE": db.name,
            "RAW_BUCKET": bucket.name,
            "AWS_REGION": "ap-southeast-1",
            "AWS_ENDPOINT_URL": bucket.endpoint_url,
            "ETL_BATCH_OBJECTS": "3",
            "ETL_READ_CONCURRENCY": "4",
            "ETL_RETRY_BASE_SECONDS": "0.05",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _runs(db: PgDatabase) -> int:
    return db.query("SELECT count(*) FROM etl_runs")[0][0]


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sbw_clickstream.etl_handler"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    dw_db: PgDatabase, s3_bucket: S3Bucket
) -> None:
    rng = random.Random(int(time.time()))
    source = Source(s3_bucket.name, s3_bucket.client, rng=rng)
    now = datetime.now(UTC)
    for i in range(90):
        source.put(now - timedelta(minutes=60) + i * timedelta(seconds=30), count=rng.randint(1, 4))
    env = _env(dw_db, s3_bucket)
    delivered = attempts = 0
    # The kill point is drawn up to `max_delay` after start-up; how long a run lasts depends on the
    # machine, so the range adapts: shorter after a run finished before its kill, longer after a kill.
    max_delay = 0.7
    while delivered < KILLS and attempts < 3 * KILLS:
        attempts += 1
        # Traffic keeps coming, some of it late (keys older than what may already be loaded).
        for _ in range(12):
            moment = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 600))
            source.put(moment, count=rng.randint(1, 3))
        runs_before = _runs(dw_db)
        process = _spawn(env)
        if rng.random() < 0.8:
            # Most kills land while the run works: wait until it has recorded itself (start-up
            # done), then kill after a random delay; the others land anywhere during start-up.
            wait_until(
                lambda: process.poll() is not None or _runs(dw_db) > runs_before,  # noqa: B023
                timeout=60,
                what="the ETL run to start",
            )
            delay = rng.uniform(0.02, max_delay)
        else:
            delay = rng.uniform(0.0, 1.0)
        try:
            process.wait(timeout=delay)  # the random kill point
            max_delay = max(0.05, max_delay * 0.7)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            delivered += 1
            max_delay = min(1.0, max_delay * 1.1)
        process.wait(timeout=30)
        if process.returncode not in (-signal.SIGKILL, 0):
            raise AssertionError(f"ETL exited {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        process.stderr.close()
        # The killed session's backend must be gone before the next run can take the lock.
        wait_until(lambda: advisory_locks_held(dw_db) == 0, what="the killed run's lock to be released")

    final = _spawn(env)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()[-2000:]

    assert delivered >= KILLS // 2, f"only {delivered} kills hit a running ETL"
    assert warehouse_rows(dw_db) == source.expected()
    statuses = dict(dw_db.query("SELECT status, count(*) FROM etl_objects GROUP BY status"))
    assert statuses == {"loaded": len(source.objects)}
    # The kills really interrupted loads: runs that committed batches and never finished.
    interrupted = dw_db.query(
        "SELECT count(DISTINCT o.run_id) FROM etl_objects o JOIN etl_runs r USING (run_id) "
        "WHERE r.status = 'abandoned'"
    )[0][0]
    assert interrupted >= 3, f"only {interrupted} kills landed between two batch commits"
    runs = dict(dw_db.query("SELECT status, count(*) FROM etl_runs GROUP BY status"))
    assert runs.get("succeeded", 0) >= 1 and "running" not in runs
