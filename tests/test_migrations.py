"""The warehouse migrations on a real PostgreSQL 15: bookkeeping, schema, roles and privileges."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from sbw_clickstream.contract import ENRICHMENT_FIELDS, EVENT_FIELDS, STORED_FIELD_DEFAULTS
from sbw_clickstream.etl_read import COPY_COLUMNS
from sbw_clickstream.etl_sql import load_statements
from sbw_ops.migrate import DEFAULT_DIRECTORY, MigrationError, apply_migrations, load_migrations

from tests.fixtures.postgres import PgDatabase

MINIMAL = "event_id, event_timestamp, event_name, client_id, session_id, source_key"


def test_migrations_apply_in_order_then_nothing(pg_database: PgDatabase) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and len(versions) >= 4
    assert apply_migrations(pg_database.dsn()) == versions
    assert apply_migrations(pg_database.dsn()) == []
    rows = pg_database.query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    assert [(v, n, c) for v, n, c in rows] == [(m.version, m.name, m.checksum) for m in load_migrations()]


def test_changed_applied_migration_is_a_clear_error(pg_database: PgDatabase, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIRECTORY, directory)
    apply_migrations(pg_database.dsn(), directory)
    target = directory / "V002__events.sql"
    target.write_text(target.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match=r"V002 .*changed after it was applied"):
        apply_migrations(pg_database.dsn(), directory)


def test_failed_migration_leaves_no_trace(pg_database: PgDatabase, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIRECTORY, directory)
    (directory / "V900__broken.sql").write_text("CREATE TABLE half_done (a int);\nSELECT 1/0;\n")
    with pytest.raises(MigrationError, match=r"V900__broken\.sql failed"):
        apply_migrations(pg_database.dsn(), directory)
    assert pg_database.query("SELECT to_regclass('public.half_done') IS NULL")[0][0]
    latest = load_migrations()[-1].version
    assert pg_database.query("SELECT max(version) FROM schema_migrations")[0][0] == latest
    (directory / "V900__broken.sql").unlink()
    assert apply_migrations(pg_database.dsn(), directory) == []


def test_events_table_columns_follow_the_contract(dw_db: PgDatabase) -> None:
    rows = dw_db.query(
        "SELECT column_name, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
        "FROM information_schema.columns c JOIN pg_attribute a "
        "ON a.attrelid = 'clickstream_events'::regclass "
        "AND a.attname = c.column_name WHERE c.table_name = 'clickstream_events' ORDER BY c.ordinal_position"
    )
    # A set, not the order: a field added later is `ALTER TABLE ... ADD COLUMN` (it goes last).
    names = {r[0] for r in rows}
    # is_bot: V022 adds it for the rollups (NOT NULL DEFAULT false) before the enrichment fills it.
    assert names == {*EVENT_FIELDS, *ENRICHMENT_FIELDS, "is_bot", "extra", "source_key", "loaded_at"}
    types = {r[0]: r[1] for r in rows}
    assert types["event_id"] == "uuid"
    assert types["event_timestamp"] == types["received_at"] == "timestamp with time zone"
    assert types["context_product_price"] == types["context_product_discount_price"] == "numeric(12,2)"
    assert types["is_first_visit"] == "boolean"
    nullable = {r[0]: r[2] for r in rows}
    # Enrichment columns are nullable (older rows have none), except is_bot (V030): NOT NULL DEFAULT
    # false, which the ETL writes for stored events of an ingest older than the field.
    assert all(nullable[name] for name in ENRICHMENT_FIELDS if name not in STORED_FIELD_DEFAULTS)
    assert types["is_bot"] == "boolean" and not nullable["is_bot"]
    assert dw_db.query(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE d.adrelid = 'clickstream_events'::regclass AND a.attname = 'is_bot'"
    ) == [("false",)]
    assert types["extra"] == "jsonb" and nullable["extra"]
    # The ETL's staging table copies these types from the catalog (a temp table the writer creates).
    columns, ddl, _, _ = load_statements(types)
    assert columns == COPY_COLUMNS
    for name in COPY_COLUMNS:
        assert f"{name} {types[name]}" in ddl, name


def test_primary_key_is_the_only_unique_constraint(dw_db: PgDatabase) -> None:
    # The ETL's INSERT ... ON CONFLICT DO NOTHING has no conflict target (least privilege, see
    # migrations/README.md): it must only ever skip duplicate event ids.
    rows = dw_db.query(
        "SELECT indexrelid::regclass::text, indisprimary FROM pg_index "
        "WHERE indrelid = 'clickstream_events'::regclass AND (indisunique OR indisexclusion)"
    )
    assert rows == [("clickstream_events_pkey", True)]
    indexes = {
        r[0] for r in dw_db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'clickstream_events'")
    }
    assert {
        "clickstream_events_ts_idx",
        "clickstream_events_name_ts_idx",
        "clickstream_events_session_ts_idx",
    } <= indexes


def test_group_roles_are_nologin_and_logins_are_members(dw_db: PgDatabase) -> None:
    rows = dict(
        dw_db.query(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN "
            "('clickstream_writer', 'clickstream_reader', 'sbw_etl', 'sbw_dashboard')"
        )
    )
    assert rows == {
        "clickstream_writer": False,
        "clickstream_reader": False,
        "sbw_etl": True,
        "sbw_dashboard": True,
    }
    assert dw_db.query("SELECT pg_has_role('sbw_etl', 'clickstream_writer', 'MEMBER')")[0][0]
    assert dw_db.query("SELECT pg_has_role('sbw_dashboard', 'clickstream_reader', 'MEMBER')")[0][0]
    assert not dw_db.query("SELECT pg_has_role('sbw_dashboard', 'clickstream_writer', 'MEMBER')")[0][0]


def test_migrations_hold_no_password() -> None:
    for migration in load_migrations():
        code = "\n".join(line.split("--")[0] for line in migration.sql.lower().splitlines())
        assert "password" not in code, migration.path.name


def _denied(conn, sql: str, params: tuple = ()) -> bool:  # type: ignore[no-untyped-def]
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    except errors.InsufficientPrivilege:
        return True
    return False


WRITER_DENIED = [
    "SELECT count(*) FROM clickstream_events",
    "SELECT event_id FROM clickstream_events",
    "DELETE FROM clickstream_events",
    "UPDATE clickstream_events SET event_name = 'x'",
    "TRUNCATE clickstream_events",
    "DELETE FROM etl_objects",
    "DELETE FROM etl_watermarks",
    "DELETE FROM etl_runs",
    "TRUNCATE etl_objects",
    "SELECT * FROM schema_migrations",
    "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'x', repeat('0', 64))",
    "CREATE TABLE public.sneaky (a int)",
    "ALTER TABLE clickstream_events ADD COLUMN x int",
]

READER_DENIED = [
    f"INSERT INTO clickstream_events ({MINIMAL}) VALUES (gen_random_uuid(), now(), 'x', 'c', 's', 'k')",
    "UPDATE clickstream_events SET event_name = 'x'",
    "DELETE FROM clickstream_events",
    "TRUNCATE clickstream_events",
    "INSERT INTO etl_runs (trigger) VALUES ('manual')",
    "UPDATE etl_watermarks SET last_key = 'x'",
    "DELETE FROM etl_objects",
    "CREATE TABLE public.sneaky (a int)",
    "CREATE TEMP TABLE sneaky (a int)",
    "SELECT * FROM schema_migrations",
]


@pytest.mark.parametrize("sql", WRITER_DENIED)
def test_writer_cannot_read_other_tables_or_delete(dw_db: PgDatabase, sql: str) -> None:
    conn = dw_db.connect(dw_db.etl)
    try:
        assert _denied(conn, sql), sql
    finally:
        conn.close()


@pytest.mark.parametrize("sql", READER_DENIED)
def test_reader_cannot_write(dw_db: PgDatabase, sql: str) -> None:
    conn = dw_db.connect(dw_db.dashboard)
    try:
        assert _denied(conn, sql), sql
    finally:
        conn.close()


def test_writer_can_do_exactly_its_job(dw_db: PgDatabase) -> None:
    event_id = str(uuid.uuid4())
    insert = (
        f"INSERT INTO clickstream_events ({MINIMAL}) "
        "VALUES (%s, now(), 'page_view', 'c', 's', 'k') ON CONFLICT DO NOTHING"
    )
    conn = dw_db.connect(dw_db.etl)
    try:
        with conn.cursor() as cur:
            cur.execute(insert, (event_id,))
            assert cur.rowcount == 1
            cur.execute(insert, (event_id,))
            assert cur.rowcount == 0  # duplicate skipped without any read privilege
            cur.execute("CREATE TEMP TABLE stage (a int)")
            cur.execute("INSERT INTO etl_runs (trigger) VALUES ('manual') RETURNING run_id")
            run_id = cur.fetchone()[0]
            cur.execute("UPDATE etl_runs SET status = 'succeeded' WHERE run_id = %s", (run_id,))
            cur.execute("INSERT INTO etl_watermarks (prefix, last_key) VALUES ('events/', 'k')")
            cur.execute("INSERT INTO etl_objects (object_key, status) VALUES ('k', 'loaded')")
            cur.execute("SELECT count(*) FROM etl_objects")
            assert cur.fetchone()[0] == 1
        # The explicit conflict target would need SELECT on event_id: that is why the ETL omits it.
        assert _denied(conn, insert.replace("ON CONFLICT DO", "ON CONFLICT (event_id) DO"), (event_id,))
    finally:
        conn.close()


def test_reader_reads_events_and_etl_runs(dw_db: PgDatabase) -> None:
    conn = dw_db.connect(dw_db.dashboard)
    try:
        with conn.cursor() as cur:
            for table in ("clickstream_events", "etl_runs", "etl_objects", "etl_watermarks"):
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def test_public_cannot_connect(dw_db: PgDatabase) -> None:
    name = f"stranger_{uuid.uuid4().hex[:8]}"
    dw_db.server.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'")
    try:
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            psycopg2.connect(dw_db.server.dsn(dw_db.name, name, f"pw-{name}"))
    finally:
        dw_db.server.execute(f"DROP ROLE {name}")


def test_sessions_of_the_warehouse_detect_dead_peers_and_idle_transactions(pg_database: PgDatabase) -> None:
    # V006: a half-open ETL connection must not keep the run lock for the kernel's 2 hours.
    apply_migrations(pg_database.dsn())
    conn = pg_database.connect()
    try:
        with conn.cursor() as cur:
            settings = {}
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "idle_in_transaction_session_timeout",
            ):
                cur.execute(f"SHOW {name}")
                settings[name] = cur.fetchone()[0]
    finally:
        conn.close()
    assert settings == {
        "tcp_keepalives_idle": "60",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "6",
        "idle_in_transaction_session_timeout": "5min",
    }
