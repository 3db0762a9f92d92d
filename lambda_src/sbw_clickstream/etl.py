"""SBW_Lamda_ETL as a plain function: list what is new, read it concurrently, load it exactly once.

`run_etl` takes its clients in (an S3 client, a database connect function) and returns the run's
summary; the Lambda handler (`etl_handler.py`) only builds those and logs the result.

Order of work: take the advisory lock (or return "skipped"), record the run, read the watermark,
list from watermark minus look-back (or the backfill range), skip objects already in
`etl_objects`, read the rest with a bounded thread pool, and commit them in batches, in key order;
each batch carries its rows, its objects' bookkeeping and the new watermark in one transaction.
Before each page and each object the remaining Lambda time is checked: below the margin the run
commits what it has read and stops ("partial"); the next run continues from the watermark.
Last, the run folds the events queued since the last refresh into the dashboard's rollups
(`dash_rollup_refresh`, migration V005, then `dash_dimension_refresh`, V031), in chunks while
time remains; what is left stays queued for the next run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

from sbw_clickstream.etl_config import EtlConfig
from sbw_clickstream.etl_listing import (
    ListingPlan,
    ObjectRef,
    is_backfill,
    list_objects,
    plan_backfill,
    start_after_for,
)
from sbw_clickstream.etl_load import Warehouse
from sbw_clickstream.etl_read import ObjectResult, read_in_order, read_object
from sbw_clickstream.etl_retry import EtlError, RetryPolicy, call_with_retries
from sbw_clickstream.keys import parse_event_key

MAX_REPORTED_QUARANTINES = 20
# Queued events folded into the dashboard rollups per transaction (a few seconds of work each).
ROLLUP_CHUNK_ROWS = 100_000


@dataclass
class RunSummary:
    """What a run did; returned by the handler, logged, and stored in etl_runs.summary."""

    status: str = "running"
    mode: str = "incremental"
    run_id: int | None = None
    objects_seen: int = 0
    objects_already_processed: int = 0
    objects_loaded: int = 0
    objects_quarantined: int = 0
    rows_inserted: int = 0
    duplicates_skipped: int = 0
    legacy_events: int = 0
    event_ids_derived: int = 0
    batches: int = 0
    s3_list_calls: int = 0
    s3_get_calls: int = 0
    start_after: str | None = None
    watermark: str | None = None
    watermark_repaired_from: str | None = None
    backfill: dict[str, Any] = field(default_factory=dict)
    # What dw_maintain_partitions() did: {"cutoff", "created", "dropped"} (V009).
    lifecycle: dict[str, Any] = field(default_factory=dict)
    # Field name -> objects whose events carried it without a column (kept in `extra`).
    fields_kept_in_extra: dict[str, int] = field(default_factory=dict)
    # The session holding the run lock when the run was skipped (or the stale one it ended).
    lock_holder: dict[str, Any] | None = None
    stopped_early: bool = False
    rollup_rows: int = 0
    duration_ms: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.value += 1


def run_etl(
    config: EtlConfig,
    s3: Any,
    connect: Callable[[], Any],
    event: Any = None,
    remaining_ms: Callable[[], int] | None = None,
    trigger: str = "schedule",
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """One ETL run; returns its summary. Raises EtlError (clear message) when it cannot finish.

    `remaining_ms` is the Lambda context's get_remaining_time_in_millis (None: no deadline).
    `event` may be {"from": ..., "to": ...} to re-process a date range (backfill).
    """
    started = time.monotonic()
    summary = RunSummary()
    time_left = None
    if remaining_ms is not None:
        deadline_ms = remaining_ms  # bound now: mypy cannot see through the closure otherwise

        def time_left() -> float:
            return (deadline_ms() - config.deadline_margin_seconds * 1000) / 1000

    # Transient errors are retried only while the deadline allows it (RetryPolicy.time_left).
    policy_s3 = RetryPolicy(config.s3_retries, config.retry_base_seconds, sleep=sleep, time_left=time_left)
    policy_db = RetryPolicy(config.db_retries, config.retry_base_seconds, sleep=sleep, time_left=time_left)
    plan = None
    if is_backfill(event):
        plan = plan_backfill(config.prefix, event)
        trigger = "backfill"
    warehouse = Warehouse(connect, policy_db)
    if not warehouse.open(config.lock_stale_seconds):
        summary.status = "skipped"
        summary.lock_holder = warehouse.lock_holder
        summary.error = "another ETL run holds the lock (pg_try_advisory_lock); nothing done"
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        return summary.as_dict()
    summary.lock_holder = warehouse.lock_holder  # set when a stale holder was ended
    try:
        if trigger == "catch_up" and plan is None:
            # The frequent catch-up schedule: O(1) (one query, no S3 call) unless the last run
            # stopped early or a backfill is unfinished; then it does the work of that run.
            open_range = warehouse.open_backfill()
            if open_range is not None:
                plan = plan_backfill(config.prefix, {"from": open_range[0], "to": open_range[1]})
            elif warehouse.last_run_status() in (None, "succeeded"):
                # Anything else (partial, failed, or 'running': killed at its timeout) is continued.
                summary.status = "idle"
                summary.duration_ms = int((time.monotonic() - started) * 1000)
                return summary.as_dict()
        summary.run_id = warehouse.start_run(trigger)
        # Partitions ahead (a month without one would load into the DEFAULT partition) and retention.
        summary.lifecycle = warehouse.maintain_partitions()
        if plan is not None:
            summary.mode = "backfill"
            plan = _resume_backfill(warehouse, plan, summary)
        else:
            watermark = warehouse.watermark(config.prefix)
            if watermark is not None and parse_event_key(watermark) is None:
                # Left by an older ETL that let a stray key become the watermark: go back to
                # the greatest processed key of the layout (objects already done are skipped).
                summary.watermark_repaired_from = watermark
                watermark = warehouse.repair_watermark(config.prefix, parse_event_key)
            start = start_after_for(config.prefix, watermark, timedelta(minutes=config.lookback_minutes))
            plan = ListingPlan(config.prefix, start)
            summary.watermark = watermark
        summary.start_after = plan.start_after
        _run(config, s3, warehouse, plan, summary, policy_s3, remaining_ms)
        if plan.range_id is not None and not summary.stopped_early:
            warehouse.finish_backfill(plan.range_id)
            summary.backfill["finished"] = True
        _refresh_rollups(config, warehouse, summary, remaining_ms)
        summary.status = "partial" if summary.stopped_early else "succeeded"
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        warehouse.finish_run(summary.run_id, summary.status, summary.as_dict())
        return summary.as_dict()
    except Exception as exc:
        summary.status = "failed"
        summary.error = f"{type(exc).__name__}: {exc}"
        summary.duration_ms = int((time.monotonic() - started) * 1000)
        _record_failure(warehouse, summary)
        if isinstance(exc, EtlError):
            raise EtlError(f"{exc} (committed before the failure: {summary.batches} batch(es))") from exc
        raise
    finally:
        warehouse.close()


def _resume_backfill(warehouse: Warehouse, plan: ListingPlan, summary: RunSummary) -> ListingPlan:
    """Start the range's cursor, or resume after it: a backfill larger than one run goes on
    where the previous invocation stopped instead of starting over (and looping as partial)."""
    assert plan.range_id is not None
    cursor, done = warehouse.start_backfill(plan.range_id)
    summary.backfill = {
        "from": plan.range_id[0],
        "to": plan.range_id[1],
        "resumed_after": cursor,
        "objects_done": done,
        "finished": False,
    }
    if cursor is not None and (plan.start_after is None or cursor > plan.start_after):
        plan = replace(plan, start_after=cursor)
    return plan


def _refresh_rollups(
    config: EtlConfig, warehouse: Warehouse, summary: RunSummary, remaining_ms: Callable[[], int] | None
) -> None:
    """Fold queued events into the dashboard rollups, chunk by chunk, until the queue is empty or
    the deadline margin is reached (then the run is "partial" and the next run goes on)."""
    margin_ms = config.deadline_margin_seconds * 1000
    while True:
        if remaining_ms is not None and remaining_ms() < margin_ms:
            summary.stopped_early = True
            return
        taken = warehouse.refresh_rollups(ROLLUP_CHUNK_ROWS)
        summary.rollup_rows += taken
        if taken < ROLLUP_CHUNK_ROWS:
            return


def _record_failure(warehouse: Warehouse, summary: RunSummary) -> None:
    """Best effort: store the failure in etl_runs (the database may be what failed)."""
    if summary.run_id is None:
        return
    # Already failing: if this fails too, the next run marks the row abandoned.
    with contextlib.suppress(Exception):
        warehouse.finish_run(summary.run_id, "failed", summary.as_dict(), summary.error)


def _run(
    config: EtlConfig,
    s3: Any,
    warehouse: Warehouse,
    plan: ListingPlan,
    summary: RunSummary,
    policy: RetryPolicy,
    remaining_ms: Callable[[], int] | None,
) -> None:
    list_calls, get_calls = _Counter(), _Counter()
    margin_ms = config.deadline_margin_seconds * 1000

    def out_of_time() -> bool:
        return remaining_ms is not None and remaining_ms() < margin_ms

    def list_page(**kwargs: Any) -> dict[str, Any]:
        list_calls()
        return call_with_retries(lambda: s3.list_objects_v2(**kwargs), "S3 ListObjectsV2", policy)

    def refs() -> Iterator[ObjectRef]:
        for page in list_objects(list_page, config.raw_bucket, plan, config.list_page_size):
            summary.objects_seen += len(page)
            todo = page
            if not plan.reprocess:
                done = warehouse.processed_keys([ref.key for ref in page])
                todo = [ref for ref in page if ref.key not in done]
                summary.objects_already_processed += len(page) - len(todo)
            yield from todo
            if out_of_time():
                summary.stopped_early = True
                return

    def read(ref: ObjectRef) -> ObjectResult:
        return read_object(
            s3, config.raw_bucket, ref, config.max_object_bytes, policy, get_calls, warehouse.columns
        )

    batch: list[ObjectResult] = []
    batch_rows = 0
    try:
        reader = read_in_order(refs(), read, config.read_concurrency)
        try:
            for result in reader:
                batch.append(result)
                batch_rows += result.rows
                if len(batch) >= config.batch_objects or batch_rows >= config.batch_rows:
                    _commit(warehouse, plan, batch, summary)
                    batch, batch_rows = [], 0
                if out_of_time():
                    summary.stopped_early = True
                    break
        finally:
            reader.close()
        if batch:
            _commit(warehouse, plan, batch, summary)
    finally:
        summary.s3_list_calls = list_calls.value
        summary.s3_get_calls = get_calls.value


def _commit(warehouse: Warehouse, plan: ListingPlan, batch: list[ObjectResult], summary: RunSummary) -> None:
    # The batch is a contiguous run of the listing order: every key up to its last one is done.
    # Only a key of the layout may become the watermark: a stray key (`events/_manifest.json`)
    # sorts after every date folder, and as the watermark it would hide every later object.
    watermark = None
    if not plan.reprocess:
        watermark = next((r.ref.key for r in reversed(batch) if parse_event_key(r.ref.key)), None)
    # A backfill commits its cursor (any listed key: it is a listing position) with the batch.
    outcome = warehouse.load_batch(batch, plan.prefix, watermark, summary.run_id or 0, plan.range_id)
    summary.batches += 1
    summary.rows_inserted += outcome.inserted
    summary.duplicates_skipped += outcome.duplicates
    for result in outcome.results:
        if result.status == "loaded":
            summary.objects_loaded += 1
            for name in result.extra_fields:
                summary.fields_kept_in_extra[name] = summary.fields_kept_in_extra.get(name, 0) + 1
            summary.legacy_events += result.legacy_events
            summary.event_ids_derived += result.derived_ids
        else:
            summary.objects_quarantined += 1
            if len(summary.quarantined) < MAX_REPORTED_QUARANTINES:
                summary.quarantined.append({"key": result.ref.key, "reason": result.error or ""})
    if plan.range_id is not None:
        summary.backfill["objects_done"] = summary.backfill.get("objects_done", 0) + len(outcome.results)
        summary.backfill["cursor"] = batch[-1].ref.key
    if watermark is not None and (summary.watermark is None or watermark > summary.watermark):
        summary.watermark = watermark
