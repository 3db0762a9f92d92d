"""Local services for tests, one implementation each: a free port, the local ingest API (in process or as
`python -m sbw_ops.local_api`), and what a bucket holds. moto itself is tests/fixtures/moto.py's
(`moto_server`, `s3_bucket`, ...); PostgreSQL is tests/fixtures/postgres.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the local API (and the ingest handler behind it) loads only for the tests that use it
    from sbw_ops.local_api import LocalApi

    from tests.fixtures.moto import S3Bucket

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_local_api(bucket: S3Bucket, **kwargs: Any) -> Iterator[LocalApi]:
    """The real ingest handler behind the local HTTP adapter, in this process, for `bucket`."""
    from sbw_ops.local_api import serve

    api = serve(bucket.name, bucket.endpoint_url, **kwargs)
    try:
        yield api
    finally:
        api.shutdown()


@contextlib.contextmanager
def local_api_process(
    bucket: S3Bucket,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    cors_origins: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run `python -m sbw_ops.local_api` on a free port for `bucket`; yield its /clickstream URL."""
    from sbw_ops.local_api import READY_PREFIX, command

    cmd = command(bucket.name, str(bucket.endpoint_url), *extra_args, cors_origins=cors_origins)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=REPO)
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=60):
            raise RuntimeError(f"local API did not start: {log_path.read_text(errors='replace')[-2000:]}")
        line = process.stdout.readline().decode().strip()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"local API said {line!r}: {log_path.read_text(errors='replace')[-2000:]}")
        yield line[len(READY_PREFIX) :] + "/clickstream"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def stored_events(bucket: S3Bucket, prefix: str = "events/") -> list[dict[str, Any]]:
    """Every event of every NDJSON object under `prefix`."""
    events: list[dict[str, Any]] = []
    for key in bucket.keys(prefix):
        events.extend(json.loads(line) for line in bucket.read(key).decode().splitlines() if line.strip())
    return events
