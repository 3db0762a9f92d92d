"""ETL and warehouse benchmarks; every figure is a ratio to a baseline measured in the same run.

- load path (staged COPY + INSERT ... ON CONFLICT DO NOTHING + bookkeeping, ETL batching) rows/s
  / plain COPY of the same rows into an identical table (same indexes)        goal >= 0.75
- S3 calls of a run with nothing new, 1,000 vs 100,000 stored objects          goal equal, <= 3
- objects/s with 20 ms per S3 request (in-process fake S3), and / 0 ms         goal >= 1,000 obj/s
- rollup refresh at the end of a run (dashboard rollups, V005) rows/s / plain COPY (no goal: printed)
- peak RSS of an ETL process loading 100,000 objects                           goal < 256 MiB
- capacity: one hour of 100 requests/s single-event traffic (360,000 objects) at 20 ms per S3
  request: objects/s, the run's length as a fraction of the deployed timeout (cloudformation/etl.yaml,
  the figure sbw_ops.cost uses too) and the largest request rate one run / back-to-back catch-up runs
  keep up with                                                                 (no goal: printed)
- dashboard queries without / with the V003 indexes (the indexes' justification)

Runs a private PostgreSQL 15 (the tests' fixture helpers) with the real migrations.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from sbw_clickstream.etl import ROLLUP_CHUNK_ROWS, run_etl
from sbw_clickstream.etl_config import EtlConfig
from sbw_clickstream.etl_listing import ObjectRef
from sbw_clickstream.etl_load import Warehouse
from sbw_clickstream.etl_read import COPY_COLUMNS, encode_object
from sbw_clickstream.etl_retry import RetryPolicy
from sbw_clickstream.keys import event_key, uuid7
from sbw_ops.cost import ETL_SECONDS_PER_HOUR, ETL_TIMEOUT_S

from tests.fixtures.postgres import PgServer, create_warehouse_template, start_pg_server

REPO = Path(__file__).resolve().parents[1]
EVENTS_PER_OBJECT = 10  # a tracker batch; ingest writes one object per request
START = datetime(2026, 1, 1, tzinfo=UTC)
_NAMES = ("page_view", "product_view", "add_to_cart", "begin_checkout", "purchase", "search")
_CATEGORIES = ("kitchen", "garden", "toys", "books", "sports", "audio", "video", "tools")


def object_key(index: int, spacing_ms: int = 1000) -> str:
    moment = START + timedelta(milliseconds=index * spacing_ms)
    return event_key(moment, uuid7(int(moment.timestamp() * 1000)))


def object_body(key: str, events: int = EVENTS_PER_OBJECT) -> bytes:
    """Deterministic NDJSON body of stored events for `key` (generated on demand, not kept)."""
    seed = uuid.uuid5(uuid.NAMESPACE_URL, key).int
    object_id = uuid.UUID(key[-41:-5])
    lines = []
    for i in range(events):
        n = (seed >> (i % 64)) + i
        name = _NAMES[n % len(_NAMES)]
        product = name != "page_view" and name != "search"
        moment = START + timedelta(seconds=n % (30 * 86400))
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        lines.append(
            json.dumps(
                {
                    # UUIDv7 like ingest's: the object's time-ordered id with the event's index mixed in
                    "event_id": str(uuid.UUID(int=object_id.int ^ (i + 1))),
                    "event_timestamp": stamp,
                    "event_name": name,
                    "user_id": f"user-{n % 5000}" if n % 3 else None,
                    "user_login_state": "logged_in" if n % 3 else "guest",
                    "identity_source": "cognito" if n % 3 else "anonymous",
                    "client_id": f"client-{n % 20000}",
                    "session_id": f"session-{n % 40000}",
                    "is_first_visit": n % 7 == 0,
                    "context_product_id": f"P{n % 500:04d}" if product else None,
                    "context_product_name": f"Product {n % 500}" if product else None,
                    "context_product_category": _CATEGORIES[n % len(_CATEGORIES)] if product else None,
                    "context_product_brand": "SBW" if product else None,
                    "context_product_price": 19.99 if product else None,
                    "context_product_discount_price": 17.5 if product else None,
                    "context_product_url_path": f"/products/{n % 500}" if product else None,
                    "received_at": stamp,
                    "schema_version": "1.0.0",
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "client_ip": "203.0.113.0",
                },
                separators=(",", ":"),
            )
        )
    return ("\n".join(lines) + "\n").encode()


class FakeS3:
    """In-process S3 (ListObjectsV2 with StartAfter/continuation, GetObject) that counts calls and
    can add a fixed latency per request (moto is far too slow to measure throughput)."""

    def __init__(self, count: int, latency: float = 0.0, events: int = EVENTS_PER_OBJECT) -> None:
        self.keys = [object_key(i) for i in range(count)]
        self.latency = latency
        self.events = events
        self.lists = 0
        self.gets = 0
        self._lock = threading.Lock()

    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        with self._lock:
            self.lists += 1
        if self.latency:
            time.sleep(self.latency)
        start = kw.get("ContinuationToken") or kw.get("StartAfter") or ""
        first = bisect.bisect_right(self.keys, start)
        page = [k for k in self.keys[first : first + kw.get("MaxKeys", 1000)] if k.startswith(kw["Prefix"])]
        truncated = first + len(page) < len(self.keys)
        response: dict[str, Any] = {
            "Contents": [{"Key": k, "ETag": '"0"', "Size": 4096} for k in page],
            "IsTruncated": truncated,
        }
        if truncated:
            response["NextContinuationToken"] = page[-1]
        return response

    def get_object(self, **kw: Any) -> dict[str, Any]:
        with self._lock:
            self.gets += 1
        if self.latency:
            time.sleep(self.latency)
        return {"Body": io.BytesIO(object_body(kw["Key"], self.events))}


class Bench:
    """A private PostgreSQL with a migrated warehouse template."""

    def __init__(self) -> None:
        self.server: PgServer = start_pg_server()
        self.template = create_warehouse_template(self.server)

    def fresh(self) -> str:
        return self.server.create_database(template=self.template, prefix="bench")

    def config(self, dbname: str, **env: Any) -> EtlConfig:
        creds = self.server.users["sbw_etl"]
        values = {
            "DWH_HOST": self.server.host,
            "DWH_PORT": str(self.server.port),
            "DWH_USER": creds.user,
            "DWH_PASSWORD": creds.password,
            "DWH_DATABASE": dbname,
            "RAW_BUCKET": "bench-raw",
            "AWS_REGION": "ap-southeast-1",
        }
        values.update({k: str(v) for k, v in env.items()})
        return EtlConfig.from_env(values)

    def stop(self) -> None:
        self.server.stop()


def connector(config: EtlConfig) -> Callable[[], Any]:
    return lambda: psycopg2.connect(**config.dsn_kwargs(config.password or ""))


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a local server backend has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.commit()
    return pid


def _plain_copy_seconds(bench: Bench, data: bytes) -> tuple[float, float]:
    """(wall seconds, server backend CPU seconds) of one plain COPY into an identical table."""
    db = bench.fresh()
    conn = bench.server.connect(db, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE copy_target (LIKE clickstream_events INCLUDING ALL)")
            conn.commit()
            pid = _backend_pid(conn)
            cpu, started = _cpu_seconds(pid), time.perf_counter()
            cur.copy_expert(f"COPY copy_target ({', '.join(COPY_COLUMNS)}) FROM STDIN", io.BytesIO(data))
            conn.commit()
            return time.perf_counter() - started, _cpu_seconds(pid) - cpu
    finally:
        conn.close()
        bench.server.drop_database(db)


def _load_path_seconds(bench: Bench, results: list[Any], rows: int) -> tuple[float, float, float]:
    """(wall seconds, server backend CPU seconds) of the ETL's load path over the same rows, and the
    wall seconds of the run's last step: folding them into the dashboard rollups (V005)."""
    db = bench.fresh()
    config = bench.config(db)
    warehouse = Warehouse(connector(config), RetryPolicy(0))
    assert warehouse.open()
    pid = _backend_pid(warehouse._conn)
    cpu, started = _cpu_seconds(pid), time.perf_counter()
    batch: list[Any] = []
    batch_rows = 0
    for result in results:  # the ETL's batching (batch_objects / batch_rows)
        batch.append(result)
        batch_rows += result.rows
        if len(batch) >= config.batch_objects or batch_rows >= config.batch_rows:
            warehouse.load_batch(batch, "events/", batch[-1].ref.key, 1)
            batch, batch_rows = [], 0
    if batch:
        warehouse.load_batch(batch, "events/", batch[-1].ref.key, 1)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu
    refresh_started = time.perf_counter()
    while warehouse.refresh_rollups(ROLLUP_CHUNK_ROWS) == ROLLUP_CHUNK_ROWS:
        pass
    refresh = time.perf_counter() - refresh_started
    warehouse.close()
    loaded = bench.server.execute("SELECT count(*) FROM clickstream_events", dbname=db)[0][0]
    bench.server.drop_database(db)
    assert loaded == rows
    return seconds, cpu, refresh


def _load_vs_copy(bench: Bench, objects: int = 10_000, rounds: int = 3) -> None:
    """Best of `rounds` alternating measurements each (the machine may be shared); the server
    backend's CPU time is reported too, as the figure that load on the machine hardly moves."""
    keys = [object_key(i) for i in range(objects)]
    results = [encode_object(ObjectRef(k, "0", 4096), object_body(k)) for k in keys]
    rows = sum(r.rows for r in results)
    data = b"".join(r.data for r in results)
    copies, loads = [], []
    for _ in range(rounds):
        copies.append(_plain_copy_seconds(bench, data))
        loads.append(_load_path_seconds(bench, results, rows))
    copy_rate, load_rate = rows / min(c[0] for c in copies), rows / min(x[0] for x in loads)
    cpu_ratio = min(c[1] for c in copies) / max(min(x[1] for x in loads), 1e-9)
    print(
        f"load path: {rows} rows in {objects} objects: {load_rate:,.0f} rows/s (staged COPY + ON CONFLICT "
        f"+ bookkeeping, ETL batches) / plain COPY into an identical table {copy_rate:,.0f} rows/s "
        f"= {load_rate / copy_rate:.2f} (goal >= 0.75; best of {rounds}); per server CPU second: "
        f"{cpu_ratio:.2f}"
    )
    refresh_rate = rows / min(x[2] for x in loads)
    print(
        f"rollup refresh (end of run, dash_rollup_refresh): {refresh_rate:,.0f} rows/s "
        f"/ plain COPY {copy_rate:,.0f} rows/s = {refresh_rate / copy_rate:.2f} (best of {rounds})"
    )


def _idle_calls(bench: Bench, objects: int) -> tuple[int, dict[str, Any]]:
    db = bench.fresh()
    config = bench.config(db)
    fake = FakeS3(objects, events=1)
    first = run_etl(config, fake, connector(config))
    assert first["objects_loaded"] == objects, first
    fake.lists = fake.gets = 0
    idle = run_etl(config, fake, connector(config))
    bench.server.drop_database(db)
    return fake.lists + fake.gets, idle


def _timed_run(bench: Bench, objects: int, latency: float) -> tuple[dict[str, Any], float, EtlConfig]:
    """One ETL run over `objects` one-event objects (fake S3) with `latency`: summary, seconds, config."""
    db = bench.fresh()
    config = bench.config(db)
    fake = FakeS3(objects, latency=latency, events=1)
    started = time.perf_counter()
    summary = run_etl(config, fake, connector(config))
    seconds = time.perf_counter() - started
    bench.server.drop_database(db)
    return summary, seconds, config


def _throughput(bench: Bench, objects: int, latency: float) -> float:
    summary, seconds, _ = _timed_run(bench, objects, latency)
    assert summary["objects_loaded"] == objects
    return objects / seconds


CAPACITY_OBJECTS = 360_000  # one hour at 100 requests/s, one event each


def _capacity(bench: Bench, objects: int = CAPACITY_OBJECTS, latency: float = 0.020) -> None:
    """The whole path (list, 64 concurrent GETs, parse, staged COPY, bookkeeping, rollup refresh)
    over one hour of 100 req/s traffic, without a deadline, against the deployed timeout."""
    summary, seconds, config = _timed_run(bench, objects, latency)
    assert summary["objects_loaded"] == objects and summary["status"] == "succeeded", summary
    rate = objects / seconds
    one_run = rate * (ETL_TIMEOUT_S - config.deadline_margin_seconds) / 3600
    print(
        f"capacity: {objects:,} objects (1 h of 100 req/s x 1 event) at {latency * 1000:.0f} ms per S3 "
        f"request: "
        f"{rate:,.0f} objects/s, {seconds:,.0f} s = {seconds / ETL_TIMEOUT_S:.2f} x the deployed timeout "
        f"({ETL_TIMEOUT_S} s); one hourly run keeps up with {one_run:,.0f} req/s, back-to-back catch-up runs "
        f"with {rate * ETL_SECONDS_PER_HOUR / 3600:,.0f} req/s"
    )


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_child(dsn_json: str) -> None:
    """Run in a fresh process: load 100,000 objects and report peak RSS (JSON on stdout)."""
    args = json.loads(dsn_json)
    config = EtlConfig.from_env(args["env"])
    fake = FakeS3(args["objects"], events=1)
    before = _rss_kib()
    sampled = [before]
    done = threading.Event()

    def sample() -> None:  # the current RSS during the run (ru_maxrss also counts set-up)
        while not done.wait(0.02):
            sampled.append(_rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    summary = run_etl(config, fake, connector(config))
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak = max(max(sampled), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    fake.lists = fake.gets = 0
    idle = run_etl(config, fake, connector(config))
    print(
        json.dumps(
            {
                "before_kib": before,
                "peak_kib": peak,
                "run_peak_kib": max(sampled),
                "seconds": seconds,
                "loaded": summary["objects_loaded"],
                "idle_calls": fake.lists + fake.gets,
                "idle_status": idle["status"],
            }
        )
    )


def _memory(bench: Bench, objects: int) -> dict[str, Any]:
    db = bench.fresh()
    config = bench.config(db)
    env = {
        "DWH_HOST": config.dwh_host,
        "DWH_PORT": str(config.dwh_port),
        "DWH_USER": config.dwh_user,
        "DWH_PASSWORD": config.password,
        "DWH_DATABASE": db,
        "RAW_BUCKET": config.raw_bucket,
        "AWS_REGION": config.region,
    }
    code = "import sys; from benchmarks.bench_etl import memory_child; memory_child(sys.argv[1])"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"env": env, "objects": objects})],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'lambda_src'}:{REPO / 'controller'}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    bench.server.drop_database(db)
    return json.loads(out.stdout.strip().splitlines()[-1])


DASHBOARD_QUERIES = {
    "events per hour, last 24 h": "SELECT date_trunc('hour', event_timestamp) h, count(*) FROM {t} "
    "WHERE event_timestamp >= %(since)s GROUP BY 1 ORDER BY 1",
    "event names, last 24 h": "SELECT event_name, count(*) FROM {t} WHERE event_timestamp >= %(since)s "
    "GROUP BY 1 ORDER BY 2 DESC",
    "latest purchases": "SELECT event_timestamp, context_product_id, context_product_price FROM {t} "
    "WHERE event_name = 'purchase' ORDER BY event_timestamp DESC LIMIT 50",
    "top products of a category, last 24 h": "SELECT context_product_id, count(*) FROM {t} "
    "WHERE context_product_category = 'kitchen' AND event_timestamp >= %(since)s GROUP BY 1 "
    "ORDER BY 2 DESC LIMIT 10",
    "one session's funnel": "SELECT event_name, event_timestamp FROM {t} WHERE session_id = 'session-42' "
    "ORDER BY event_timestamp",
    "funnel, last 24 h": "SELECT count(DISTINCT session_id) FILTER (WHERE event_name = 'product_view'), "
    "count(DISTINCT session_id) FILTER (WHERE event_name = 'add_to_cart'), "
    "count(DISTINCT session_id) FILTER (WHERE event_name = 'purchase') FROM {t} "
    "WHERE event_timestamp >= %(since)s",
}


def _time_query(cur: Any, sql: str, params: dict[str, Any], repeat: int = 5) -> float:
    cur.execute(sql, params)  # warm the cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        cur.execute(sql, params)
        cur.fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _indexes(bench: Bench, objects: int = 30_000) -> None:
    db = bench.fresh()
    config = bench.config(db)
    summary = run_etl(config, FakeS3(objects), connector(config))
    conn = bench.server.connect(db)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE no_indexes (LIKE clickstream_events INCLUDING DEFAULTS)")
        cur.execute("ALTER TABLE no_indexes ADD PRIMARY KEY (event_id)")
        cur.execute("INSERT INTO no_indexes SELECT * FROM clickstream_events")
        cur.execute("VACUUM ANALYZE clickstream_events")
        cur.execute("VACUUM ANALYZE no_indexes")
        params = {"since": START + timedelta(days=29)}
        print(
            f"indexes: {summary['rows_inserted']} rows over 30 days; query time without / with V003 indexes:"
        )
        for label, sql in DASHBOARD_QUERIES.items():
            without = _time_query(cur, sql.format(t="no_indexes"), params)
            with_ = _time_query(cur, sql.format(t="clickstream_events"), params)
            print(
                f"  {label:42s} {without * 1000:8.2f} ms / {with_ * 1000:7.2f} ms = {without / with_:6.1f}x"
            )
    conn.close()
    bench.server.drop_database(db)


def main() -> None:
    bench = Bench()
    try:
        _load_vs_copy(bench)
        small, _ = _idle_calls(bench, 1_000)
        mem = _memory(bench, 100_000)
        print(
            f"no-new-data run S3 calls: {small} at 1,000 objects vs {mem['idle_calls']} at 100,000 objects "
            f"(ratio {mem['idle_calls'] / max(small, 1):.2f}; goal equal and <= 3)"
        )
        slow = _throughput(bench, 3_000, 0.020)
        fast = _throughput(bench, 3_000, 0.0)
        print(
            f"throughput: {slow:,.0f} objects/s with 20 ms per S3 request (goal >= 1,000) / "
            f"{fast:,.0f} objects/s with 0 ms = {slow / fast:.2f}"
        )
        peak_mib = mem["run_peak_kib"] / 1024
        print(
            f"memory: peak RSS {peak_mib:.0f} MiB while loading {mem['loaded']:,} objects "
            f"in {mem['seconds']:.1f} s (goal < 256 MiB: {peak_mib / 256:.2f} of it; RSS before the run "
            f"{mem['before_kib'] / 1024:.0f} MiB; process high-water mark incl. set-up "
            f"{mem['peak_kib'] / 1024:.0f} MiB)"
        )
        _indexes(bench)
        _capacity(bench)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
