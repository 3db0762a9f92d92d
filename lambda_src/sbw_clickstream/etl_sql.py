"""The ETL's SQL: the staged COPY statements built from the warehouse's column types (read from the
catalog, so adding a column is one migration and no ETL edit) and the bookkeeping statements of a run
(objects, watermark, backfill cursor, the run lock's holder). Warehouse (etl_load) runs them."""

from __future__ import annotations

from sbw_clickstream.etl_read import COPY_COLUMNS
from sbw_clickstream.etl_retry import EtlError

# The warehouse's columns and their types, read from the catalog (readable without any privilege
# on the table): the staging table copies them, so adding a column is one migration, no ETL edit.
COLUMNS_SQL = (
    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
    "WHERE a.attrelid = 'public.clickstream_events'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
)
# Columns without which nothing can load (the others may lag behind the contract: see `extra`).
REQUIRED_COLUMNS = ("event_id", "event_timestamp", "event_name", "extra", "source_key")


def load_statements(types: dict[str, str]) -> tuple[tuple[str, ...], str, str, str]:
    """(COPY columns present in the warehouse, staging DDL, COPY, INSERT) for its column types."""
    missing = [name for name in REQUIRED_COLUMNS if name not in types]
    if missing:
        raise EtlError(
            f"clickstream_events has no column {', '.join(missing)}: apply the warehouse migrations "
            "(dw_schema role) before this ETL"
        )
    columns = tuple(name for name in COPY_COLUMNS if name in types)
    names = ", ".join(columns)
    ddl = (
        "CREATE TEMP TABLE IF NOT EXISTS etl_stage ("
        + ", ".join(f"{name} {types[name]}" for name in columns)
        + ") ON COMMIT DELETE ROWS"
    )
    copy = f"COPY etl_stage ({names}) FROM STDIN"
    insert = (
        f"INSERT INTO public.clickstream_events ({names}) "
        f"SELECT {names} FROM etl_stage ON CONFLICT DO NOTHING"
    )
    return columns, ddl, copy, insert


OBJECTS_SQL = (
    "INSERT INTO public.etl_objects (object_key, etag, size_bytes, status, rows_in_object, error, run_id) "
    "VALUES %s ON CONFLICT (object_key) DO UPDATE SET etag = EXCLUDED.etag, "
    "size_bytes = EXCLUDED.size_bytes, status = EXCLUDED.status, "
    "rows_in_object = EXCLUDED.rows_in_object, error = EXCLUDED.error, "
    "run_id = EXCLUDED.run_id, processed_at = now()"
)
WATERMARK_SQL = (
    "INSERT INTO public.etl_watermarks AS w (prefix, last_key) VALUES (%s, %s) "
    "ON CONFLICT (prefix) DO UPDATE SET "
    'last_key = GREATEST(w.last_key COLLATE "C", EXCLUDED.last_key COLLATE "C"), updated_at = now()'
)


# The session holding the run lock (a bigint advisory key is classid:objid, objsubid 1).
HOLDER_SQL = (
    "SELECT a.pid, a.usename::text, a.application_name, host(a.client_addr), a.backend_start, a.state, "
    "a.state_change, extract(epoch FROM now() - a.backend_start), a.usename = current_user "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND (l.classid::bigint << 32 | l.objid::bigint) = %s"
)
BACKFILL_START_SQL = (
    "INSERT INTO public.etl_backfills AS b (range_from, range_to, runs) VALUES (%s, %s, 1) "
    "ON CONFLICT (range_from, range_to) DO UPDATE SET runs = b.runs + 1, updated_at = now(), "
    # A finished range asked again starts over.
    "cursor_key = CASE WHEN b.finished_at IS NULL THEN b.cursor_key END, "
    "objects_done = CASE WHEN b.finished_at IS NULL THEN b.objects_done ELSE 0 END, "
    "rows_inserted = CASE WHEN b.finished_at IS NULL THEN b.rows_inserted ELSE 0 END, "
    "started_at = CASE WHEN b.finished_at IS NULL THEN b.started_at ELSE now() END, "
    "finished_at = NULL "
    "RETURNING cursor_key, objects_done"
)
BACKFILL_CURSOR_SQL = (
    "UPDATE public.etl_backfills SET cursor_key = %s, objects_done = objects_done + %s, "
    "rows_inserted = rows_inserted + %s, updated_at = now() WHERE range_from = %s AND range_to = %s"
)
