"""Loading into the warehouse, exactly once: staged COPY + INSERT ... ON CONFLICT DO NOTHING.

One transaction per batch holds the batch's rows, its `etl_objects` bookkeeping (loaded and
quarantined objects) and the watermark: a crash at any point leaves either all of it or none.
A session-level advisory lock keeps two runs (schedule + manual) from overlapping. Connection
errors are retried with backoff on a fresh connection (the lock is taken again), then the run
fails with EtlError; a batch is never half committed.

Privileges: the ETL user (clickstream_writer) may only INSERT into clickstream_events. That is
why the load uses `ON CONFLICT DO NOTHING` without a conflict target: `ON CONFLICT (event_id)`
would also need SELECT on event_id. The primary key is the table's only unique constraint.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.extras

from sbw_clickstream.etl_read import COPY_COLUMNS, ObjectResult, quarantined
from sbw_clickstream.etl_retry import EtlError, RetryPolicy
from sbw_clickstream.etl_sql import (
    BACKFILL_CURSOR_SQL,
    BACKFILL_START_SQL,
    COLUMNS_SQL,
    HOLDER_SQL,
    OBJECTS_SQL,
    WATERMARK_SQL,
    load_statements,
)

T = TypeVar("T")

# pg_try_advisory_lock key of SBW_Lamda_ETL (per database).
ETL_LOCK_KEY = 0x5B3E_7A11


class LockNotRetakenError(RuntimeError):
    """After a reconnect the run lock was busy: our dead session may still hold it for a moment,
    or another run took over. Retried like a connection error, then fatal."""


_TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, LockNotRetakenError)
# Errors caused by one object's values (the batch is then loaded object by object).
_DATA_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


@dataclass(frozen=True)
class BatchOutcome:
    """What one committed batch did."""

    staged: int
    inserted: int
    results: list[ObjectResult]

    @property
    def duplicates(self) -> int:
        return self.staged - self.inserted


class Warehouse:
    """The ETL's connection to clickstream_dw: lock, bookkeeping and batch loads, with retries."""

    def __init__(self, connect: Callable[[], Any], policy: RetryPolicy, lock_key: int = ETL_LOCK_KEY) -> None:
        self._connect = connect
        self._policy = policy
        self._lock_key = lock_key
        self._conn: Any = None
        self._stale_seconds: float | None = None
        # The COPY columns the warehouse has, and the statements for them (set by open()).
        self.columns: tuple[str, ...] = COPY_COLUMNS
        self._copy_sql = self._insert_sql = ""
        # Who held the run lock when it was busy (or the stale holder that was ended).
        self.lock_holder: dict[str, Any] | None = None

    # -- connection -------------------------------------------------------------------------
    def open(self, stale_seconds: float | None = None) -> bool:
        """Connect (with retries) and take the run lock; False when another run holds it.

        A holder whose session is older than `stale_seconds` (longer than any Lambda can live)
        is a dead run whose connection the server has not noticed yet: it is ended
        (pg_terminate_backend, allowed on sessions of the same role) and the lock taken.
        """
        self._stale_seconds = stale_seconds
        return self._with_retries("connect to the warehouse", self._open_once, reconnect=False)

    def _open_once(self) -> bool:
        self._drop_connection()
        conn = self._connect()
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
            locked = bool(cur.fetchone()[0])
            if not locked:
                self.lock_holder = self._holder(cur)
                if self._is_stale(self.lock_holder):
                    assert self.lock_holder is not None
                    cur.execute("SELECT pg_terminate_backend(%s, 5000)", (self.lock_holder["pid"],))
                    self.lock_holder["ended_as_stale"] = bool(cur.fetchone()[0])
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
                    locked = bool(cur.fetchone()[0])
            if locked:
                cur.execute(COLUMNS_SQL)
                self.columns, ddl, self._copy_sql, self._insert_sql = load_statements(dict(cur.fetchall()))
                cur.execute(ddl)
        conn.commit()
        self._conn = conn
        if not locked:
            self.close()
        return locked

    def _holder(self, cur: Any) -> dict[str, Any] | None:
        """The session holding the run lock, as pg_stat_activity shows it (None: gone meanwhile)."""
        cur.execute(HOLDER_SQL, (self._lock_key,))
        row = cur.fetchone()
        if row is None:
            return None
        names = ("pid", "user", "application_name", "client_addr", "backend_start", "state", "state_change")
        holder = dict(zip(names, row[:-2], strict=True))
        for name in ("backend_start", "state_change"):
            holder[name] = holder[name].isoformat() if holder[name] is not None else None
        # NULL for another role's session (pg_stat_activity hides its details from us).
        holder["session_age_seconds"] = None if row[-2] is None else round(float(row[-2]), 1)
        holder["same_user"] = bool(row[-1])
        return holder

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        return (
            holder is not None
            and self._stale_seconds is not None
            and holder["same_user"]
            and holder["session_age_seconds"] is not None
            and holder["session_age_seconds"] > self._stale_seconds
        )

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Release the run lock, then close the connection.

        The server would release the lock when the session ends, but only after the backend has
        exited: unlocking first means a run started right after this one finds the lock free.
        """
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg2.Error):
                self._conn.rollback()
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock_all()")
                self._conn.commit()
        self._drop_connection()

    def _reconnect(self) -> None:
        if not self._open_once():
            raise LockNotRetakenError("the ETL lock is held by another session after reconnecting")

    def _with_retries(self, what: str, fn: Callable[[], T], reconnect: bool = True) -> T:
        attempt = 0
        while True:
            try:
                if reconnect and self._conn is None:
                    self._reconnect()
                return fn()
            except _TRANSIENT_DB_ERRORS as exc:
                # The session (and its transaction, temp table, lock) may be gone: start afresh.
                self._drop_connection()
                if attempt >= self._policy.attempts:
                    raise EtlError(
                        f"database: {what} failed after {attempt + 1} attempts: {str(exc).strip()}"
                    ) from exc
                self._policy.sleep(self._policy.delay(attempt))
                attempt += 1

    # -- bookkeeping ------------------------------------------------------------------------
    def start_run(self, trigger: str) -> int:
        """Mark runs left 'running' by a killed run as abandoned and record this one."""

        def start() -> int:
            with self._conn.cursor() as cur:
                cur.execute(
                    "UPDATE public.etl_runs SET status = 'abandoned', finished_at = now(), "
                    "error = 'the run ended without finishing (killed or timed out)' WHERE status = 'running'"
                )
                cur.execute("INSERT INTO public.etl_runs (trigger) VALUES (%s) RETURNING run_id", (trigger,))
                run_id = int(cur.fetchone()[0])
            self._conn.commit()
            return run_id

        return self._with_retries("record the run", start)

    def watermark(self, prefix: str) -> str | None:
        """The prefix's watermark key, or None before the first run."""

        def read() -> str | None:
            with self._conn.cursor() as cur:
                cur.execute("SELECT last_key FROM public.etl_watermarks WHERE prefix = %s", (prefix,))
                row = cur.fetchone()
            self._conn.commit()
            return row[0] if row else None

        return self._with_retries("read the watermark", read)

    def repair_watermark(self, prefix: str, in_layout: Callable[[str], Any]) -> str | None:
        """Set the prefix's watermark back to its greatest processed key of the layout (`in_layout`
        decides); None (and the watermark becomes the bare prefix, which sorts before every key)
        when there is none. The stray keys that sort last are few: they are skipped in Python, so
        the key layout stays defined in one place (keys.py)."""

        def repair() -> str | None:
            best = None
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT object_key FROM public.etl_objects WHERE starts_with(object_key, %s) "
                    'ORDER BY object_key COLLATE "C" DESC LIMIT 10000',
                    (prefix,),
                )
                best = next((key for (key,) in cur if in_layout(key)), None)
                cur.execute(
                    "UPDATE public.etl_watermarks SET last_key = %s, updated_at = now() WHERE prefix = %s",
                    (best or prefix, prefix),
                )
            self._conn.commit()
            return best

        return self._with_retries("repair the watermark", repair)

    def start_backfill(self, range_id: tuple[str, str]) -> tuple[str | None, int]:
        """(cursor, objects done) of the range's unfinished backfill; (None, 0) for a new one."""

        def start() -> tuple[str | None, int]:
            with self._conn.cursor() as cur:
                cur.execute(BACKFILL_START_SQL, range_id)
                cursor, done = cur.fetchone()
            self._conn.commit()
            return cursor, int(done)

        return self._with_retries("start the backfill", start)

    def finish_backfill(self, range_id: tuple[str, str]) -> None:
        """The range was read to its end."""

        def finish() -> None:
            with self._conn.cursor() as cur:
                cur.execute(
                    "UPDATE public.etl_backfills SET finished_at = now(), updated_at = now() "
                    "WHERE range_from = %s AND range_to = %s",
                    range_id,
                )
            self._conn.commit()

        self._with_retries("finish the backfill", finish)

    def open_backfill(self) -> tuple[str, str] | None:
        """The unfinished backfill range touched least recently (what the catch-up continues)."""

        def read() -> tuple[str, str] | None:
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT range_from, range_to FROM public.etl_backfills WHERE finished_at IS NULL "
                    "ORDER BY updated_at LIMIT 1"
                )
                row = cur.fetchone()
            self._conn.commit()
            return (row[0], row[1]) if row else None

        return self._with_retries("read open backfills", read)

    def last_run_status(self) -> str | None:
        """Status of the latest recorded run (None before the first)."""

        def read() -> str | None:
            with self._conn.cursor() as cur:
                cur.execute("SELECT status FROM public.etl_runs ORDER BY run_id DESC LIMIT 1")
                row = cur.fetchone()
            self._conn.commit()
            return row[0] if row else None

        return self._with_retries("read the last run", read)

    def maintain_partitions(self) -> dict[str, Any]:
        """dw_maintain_partitions() (V009): the coming months' partitions, and the retention set by
        the dw_schema role; returns what it did."""

        def maintain() -> dict[str, Any]:
            with self._conn.cursor() as cur:
                cur.execute("SELECT public.dw_maintain_partitions()")
                done = dict(cur.fetchone()[0])
            self._conn.commit()
            return done

        return self._with_retries("maintain the event partitions", maintain)

    def processed_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` already have an etl_objects row (loaded or quarantined)."""

        def read() -> set[str]:
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT object_key FROM public.etl_objects WHERE object_key = ANY(%s)", (list(keys),)
                )
                found = {row[0] for row in cur.fetchall()}
            self._conn.commit()
            return found

        return self._with_retries("read processed objects", read)

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        """Record the run's outcome (what the dashboard shows as the last ETL run)."""

        def finish() -> None:
            with self._conn.cursor() as cur:
                cur.execute(
                    "UPDATE public.etl_runs SET finished_at = now(), status = %s, objects_seen = %s, "
                    "objects_loaded = %s, objects_quarantined = %s, rows_inserted = %s, "
                    "duplicates_skipped = %s, summary = %s, error = %s WHERE run_id = %s",
                    (
                        status,
                        summary.get("objects_seen", 0),
                        summary.get("objects_loaded", 0),
                        summary.get("objects_quarantined", 0),
                        summary.get("rows_inserted", 0),
                        summary.get("duplicates_skipped", 0),
                        json.dumps(summary, default=str),
                        error,
                        run_id,
                    ),
                )
            self._conn.commit()

        self._with_retries("record the run's outcome", finish)

    def refresh_rollups(self, max_rows: int) -> int:
        """Fold up to `max_rows` queued events into the dashboard rollups: the main KPI cells
        (V005), then the dimension cells (V031, their own queue), one transaction each; returns the
        larger of the two counts, so the caller goes on while either queue still has a full chunk."""

        def refresh() -> int:
            taken = 0
            for function in ("dash_rollup_refresh", "dash_dimension_refresh"):
                with self._conn.cursor() as cur:
                    cur.execute(f"SELECT public.{function}(%s)", (max_rows,))
                    taken = max(taken, int(cur.fetchone()[0]))
                self._conn.commit()
            return taken

        return self._with_retries("refresh the dashboard rollups", refresh)

    # -- loading ----------------------------------------------------------------------------
    def load_batch(
        self,
        results: list[ObjectResult],
        prefix: str,
        watermark: str | None,
        run_id: int,
        backfill: tuple[str, str] | None = None,
    ) -> BatchOutcome:
        """Commit one batch: rows, object bookkeeping and watermark (or, for a backfill, its
        cursor: the batch's last key) in ONE transaction."""
        return self._with_retries(
            "load a batch", lambda: self._load_batch_once(results, prefix, watermark, run_id, backfill)
        )

    def _load_batch_once(
        self,
        results: list[ObjectResult],
        prefix: str,
        watermark: str | None,
        run_id: int,
        backfill: tuple[str, str] | None = None,
    ) -> BatchOutcome:
        conn = self._conn
        try:
            with conn.cursor() as cur:
                staged, inserted = self._insert(cur, [r for r in results if r.status == "loaded" and r.rows])
                final = results
        except _DATA_ERRORS:
            conn.rollback()
            with conn.cursor() as cur:
                staged, inserted, final = self._insert_one_by_one(cur, results)
        with conn.cursor() as cur:
            self._bookkeeping(cur, final, prefix, watermark, run_id)
            if backfill is not None and final:
                cur.execute(BACKFILL_CURSOR_SQL, (final[-1].ref.key, len(final), inserted, *backfill))
        conn.commit()
        return BatchOutcome(staged, inserted, final)

    def _insert(self, cur: Any, loaded: list[ObjectResult], clear: bool = False) -> tuple[int, int]:
        """COPY into the staging table, then insert what is new. The staging table empties itself
        at commit (ON COMMIT DELETE ROWS); `clear` empties it now (several inserts per transaction)."""
        if not loaded:
            return 0, 0
        cur.copy_expert(self._copy_sql, io.BytesIO(b"".join(r.data for r in loaded)))
        cur.execute(self._insert_sql)
        inserted = cur.rowcount
        if clear:
            cur.execute("TRUNCATE etl_stage")
        return sum(r.rows for r in loaded), inserted

    def _insert_one_by_one(
        self, cur: Any, results: list[ObjectResult]
    ) -> tuple[int, int, list[ObjectResult]]:
        """Slow path after a batch was rejected: each object in a savepoint; rejects are quarantined."""
        staged = inserted = 0
        final: list[ObjectResult] = []
        for result in results:
            if result.status != "loaded" or not result.rows:
                final.append(result)
                continue
            cur.execute("SAVEPOINT etl_object")
            try:
                rows, added = self._insert(cur, [result], clear=True)
            except _DATA_ERRORS as exc:
                cur.execute("ROLLBACK TO SAVEPOINT etl_object")
                reason = (getattr(exc, "pgerror", None) or str(exc)).strip()
                final.append(quarantined(result.ref, f"rejected by PostgreSQL: {reason}"))
                continue
            cur.execute("RELEASE SAVEPOINT etl_object")
            staged += rows
            inserted += added
            final.append(result)
        return staged, inserted, final

    @staticmethod
    def _bookkeeping(
        cur: Any, results: list[ObjectResult], prefix: str, watermark: str | None, run_id: int
    ) -> None:
        if results:
            psycopg2.extras.execute_values(
                cur,
                OBJECTS_SQL,
                [(r.ref.key, r.ref.etag, r.ref.size, r.status, r.rows, r.error, run_id) for r in results],
                page_size=1000,
            )
        if watermark is not None:
            cur.execute(WATERMARK_SQL, (prefix, watermark))
