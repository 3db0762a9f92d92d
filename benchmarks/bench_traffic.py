"""Traffic benchmark: the `traffic` generator against the local ingest API at rising rates.

Prints the highest sustained events/s whose request latency stays under p99 50 ms (every event
accepted, the achieved session rate within 10% of the target), as a ratio to the in-process handler
rate (batches of 100, S3 stubbed) of the ingest benchmark measured in the same run.

The local API runs in its own process (the real adapter and handler, as `python -m sbw_ops.local_api`
does) with the S3 PUT stubbed: a moto server manages only ~250 requests/s (DESIGN.md), so it would
measure moto. Loopback only, bounded in time (about a minute).
"""

from __future__ import annotations

import contextlib
import io
import os
import selectors
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_SRC = ROOT / "lambda_src"
for path in (str(LAMBDA_SRC), str(ROOT / "controller"), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from sbw_ops import catalog, traffic  # noqa: E402

P99_LIMIT_MS = 50.0
STEP_SECONDS = 4.0
RATES = (10, 20, 40, 80, 160, 320, 640, 1280, 2560)  # sessions/s (~11 events each)
TIME_BUDGET_SECONDS = 75.0
_READY = "bench-traffic-api "


class StubS3:
    """Accepts every PUT (the benchmark leaves S3's own latency out)."""

    def put_object(self, **_: Any) -> None:
        return None


def serve_stub_api() -> None:
    """Entry point of the API subprocess: the real local adapter + handler, S3 PUT stubbed."""
    import logging

    from sbw_ops import local_api

    api = local_api.serve("bench-traffic", None, 0, extra_env={"FAILED_RECORDS": "off"}, s3=StubS3())
    logging.disable(logging.CRITICAL)  # per-request JSON logs would measure the terminal
    print(f"{_READY}{api.url}/clickstream", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    api.shutdown()


@contextlib.contextmanager
def api_process() -> Any:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(LAMBDA_SRC), str(ROOT / "controller"), str(ROOT)]),
        "AWS_ACCESS_KEY_ID": "bench",
    }
    env.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    process = subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.bench_traffic import serve_stub_api; serve_stub_api()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=60):
            raise RuntimeError("the local API did not start")
        line = process.stdout.readline().decode().strip()
        if not line.startswith(_READY):
            raise RuntimeError(f"the local API said {line!r}")
        yield line[len(_READY) :]
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def ingest_in_process_rate() -> float:
    """Events/s of the ingest benchmark's in-process batch measurement (same run, same machine)."""
    from benchmarks import bench_ingest

    now = datetime.now(UTC)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        result = bench_ingest.bench_batches(now)
    if isinstance(result, int | float) and result > 0:
        return float(result)
    # bench_batches prints its figure: "batch ingest (100 events/request): 12,345 events/s in-process"
    for line in quiet.getvalue().splitlines():
        if line.startswith("batch ingest") and "events/s" in line:
            return float(line.split(":", 1)[1].split("events/s")[0].replace(",", "").strip())
    raise RuntimeError(f"cannot read the ingest benchmark's rate from: {quiet.getvalue()!r}")


def main() -> None:
    products = catalog.load_csv()
    handler_eps = ingest_in_process_rate()
    started = time.monotonic()
    best: traffic.Summary | None = None
    best_rate = 0
    print(
        f"traffic -> local API (S3 stubbed), {STEP_SECONDS:.0f} s per rate, p99 limit {P99_LIMIT_MS:.0f} ms"
    )
    with api_process() as url:
        # warm-up: connections, imports, the handler's first requests
        traffic.run(traffic.RunConfig(url=url, rate=200, sessions=100, workers=4), products)
        for rate in RATES:
            if time.monotonic() - started + STEP_SECONDS > TIME_BUDGET_SECONDS:
                print("  time budget reached")
                break
            config = traffic.RunConfig(
                url=url, seed=rate, rate=rate, duration=STEP_SECONDS, workers=4, batch_size=25
            )
            summary = traffic.run(config, products)
            achieved = summary.sessions / summary.elapsed_seconds if summary.elapsed_seconds else 0.0
            # kept up: every scheduled session sent and answered within 10% of the step's length
            kept_up = summary.elapsed_seconds <= 1.1 * STEP_SECONDS
            ok = summary.ok and summary.latency_p99_ms < P99_LIMIT_MS and kept_up
            print(
                f"  {rate:5d} sessions/s target: {achieved:7.0f} sent/s, "
                f"{summary.events_per_second:8,.0f} events/s, "
                f"{summary.requests:5d} requests, p50 {summary.latency_p50_ms:5.1f} ms, "
                f"p99 {summary.latency_p99_ms:6.1f} ms, rejected {summary.rejected_requests}, "
                f"failed {summary.failed_requests} {'OK' if ok else 'LIMIT'}"
            )
            if not ok:
                break
            best, best_rate = summary, rate
    if best is None:
        print(f"no rate kept p99 under {P99_LIMIT_MS:.0f} ms (a loaded machine, or the adapter's latency)")
        print(f"  baseline: in-process ingest handler {handler_eps:,.0f} events/s; ratio 0.000")
        return
    ratio = best.events_per_second / handler_eps
    print(
        f"sustained: {best.events_per_second:,.0f} events/s ({best_rate} sessions/s) with p99 "
        f"{best.latency_p99_ms:.1f} ms < {P99_LIMIT_MS:.0f} ms"
    )
    print(f"  baseline: in-process ingest handler (bench_ingest, batches of 100) {handler_eps:,.0f} events/s")
    print(f"  ratio {ratio:.3f} (HTTP + generator + adapter overhead vs the handler alone)")


if __name__ == "__main__":
    main()
