"""Apply the warehouse migrations (`roles/dw_schema/files/migrations/`) with their bookkeeping.

The protocol is the one described in that directory's README.md, which the `dw_schema` Ansible
role follows too: run `bookkeeping.sql`, then for each `V<version>__<name>.sql` in version order
that has no row in `public.schema_migrations`, execute the file's text and insert its row
(version, name, sha256 of the file's bytes) in ONE transaction. An applied file whose checksum
changed is an error: migrations are immutable once applied; write a new one instead.

Usage: ``python -m sbw_ops.migrate "dbname=clickstream_dw host=..." [directory]``.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "roles" / "dw_schema" / "files" / "migrations"
BOOKKEEPING_FILE = "bookkeeping.sql"
MIGRATION_FILE = re.compile(r"^V(?P<version>\d{3,})__(?P<name>[a-z0-9_]+)\.sql$")
# Serialises concurrent appliers on one database (same key in the role's protocol).
ADVISORY_LOCK_KEY = 0x5B3D1A70


class MigrationError(RuntimeError):
    """A migration cannot be applied (bad file name, duplicate version, changed checksum...)."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, text and sha256 checksum (hex of the file bytes)."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str


def load_migrations(directory: Path | str = DEFAULT_DIRECTORY) -> list[Migration]:
    """Every `V<version>__<name>.sql` of `directory`, in version order (other files are ignored)."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(directory).iterdir()):
        if not path.name.endswith(".sql") or path.name == BOOKKEEPING_FILE:
            continue
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named V<NNN>__<snake_name>.sql")
        data = path.read_bytes()
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version} also used by {found[version].path.name}")
        found[version] = Migration(
            version, match["name"], path, data.decode("utf-8"), hashlib.sha256(data).hexdigest()
        )
    return [found[v] for v in sorted(found)]


def _connect(conn_or_dsn: Any) -> tuple[Any, bool]:
    if isinstance(conn_or_dsn, str):
        return psycopg2.connect(conn_or_dsn), True
    return conn_or_dsn, False


def apply_migrations(conn_or_dsn: Any, directory: Path | str = DEFAULT_DIRECTORY) -> list[int]:
    """Apply the pending migrations of `directory`; return the versions applied by this call.

    Idempotent: a second call applies nothing and returns []. Raises MigrationError when an
    applied migration's file changed (checksum mismatch) or is missing from the directory.
    """
    directory = Path(directory)
    migrations = load_migrations(directory)
    bookkeeping_sql = (directory / BOOKKEEPING_FILE).read_text(encoding="utf-8")
    conn, owned = _connect(conn_or_dsn)
    saved_autocommit = conn.autocommit
    applied: list[int] = []
    try:
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            cur.execute(bookkeeping_sql)
        for migration in migrations:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                cur.execute(
                    "SELECT name, checksum FROM public.schema_migrations WHERE version = %s",
                    (migration.version,),
                )
                row = cur.fetchone()
                if row is not None:
                    if row[1].strip() != migration.checksum:
                        raise MigrationError(
                            f"migration V{migration.version:03d} ({migration.path.name}) was changed after "
                            f"it was applied: checksum in schema_migrations {row[1].strip()} != file "
                            f"{migration.checksum}; never edit an applied migration, add a new one"
                        )
                    continue
                try:
                    cur.execute(migration.sql)
                except psycopg2.Error as exc:
                    raise MigrationError(
                        f"migration {migration.path.name} failed (rolled back): {exc}".strip()
                    ) from exc
                cur.execute(
                    "INSERT INTO public.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied.append(migration.version)
        known = {m.version for m in migrations}
        with conn, conn.cursor() as cur:
            cur.execute("SELECT version, name FROM public.schema_migrations ORDER BY version")
            missing = [f"V{v:03d}__{n}.sql" for v, n in cur.fetchall() if v not in known]
        if missing:
            raise MigrationError(f"applied migrations missing from {directory}: {', '.join(missing)}")
        return applied
    finally:
        if owned:
            conn.close()
        else:
            conn.autocommit = saved_autocommit


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m sbw_ops.migrate DSN [MIGRATIONS_DIR]", file=sys.stderr)
        return 2
    directory = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIRECTORY
    try:
        applied = apply_migrations(argv[0], directory)
    except (MigrationError, psycopg2.Error) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"applied: {', '.join(f'V{v:03d}' for v in applied) or 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
