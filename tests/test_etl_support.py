"""Helpers shared by the ETL suites: source events in a (moto) bucket, ETL config, warehouse reads.

No tests here; the ETL suites import what they need.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
from sbw_clickstream.contract import STANDARD_EVENT_NAMES, format_timestamp
from sbw_clickstream.etl_config import EtlConfig
from sbw_clickstream.keys import event_key, uuid7

from tests.fixtures.postgres import PgDatabase


def now_s() -> datetime:
    """Now in UTC, to the second (the suites' event times)."""
    return datetime.now(UTC).replace(microsecond=0)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make_event(moment: datetime, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A valid stored (enriched) event as ingest writes it."""
    name = rng.choice(STANDARD_EVENT_NAMES)
    with_product = name in ("product_view", "add_to_cart", "remove_from_cart", "purchase")
    price = round(rng.uniform(1, 500), 2)
    logged_in = rng.random() < 0.4
    event: dict[str, Any] = {
        "event_id": str(uuid7(ms(moment))),
        "event_timestamp": format_timestamp(moment - timedelta(milliseconds=rng.randint(0, 5000))),
        "event_name": name,
        "user_id": f"user-{rng.randint(1, 50)}" if logged_in else None,
        "user_login_state": "logged_in" if logged_in else "guest",
        "identity_source": "cognito" if logged_in else "anonymous",
        "client_id": f"client-{rng.randint(1, 200)}",
        "session_id": f"session-{rng.randint(1, 400)}",
        "is_first_visit": rng.random() < 0.2,
        "context_product_id": f"P{rng.randint(1, 80):04d}" if with_product else None,
        "context_product_name": 'Tea\tPot \\ "Deluxe"\nset' if with_product else None,
        "context_product_category": rng.choice(["kitchen", "garden", "toys"]) if with_product else None,
        "context_product_brand": "SBW" if with_product else None,
        "context_product_price": price if with_product else None,
        "context_product_discount_price": round(price * 0.9, 2) if with_product else None,
        "context_product_url_path": f"/products/{rng.randint(1, 80)}" if with_product else None,
        "received_at": format_timestamp(moment),
        "schema_version": "1.0.0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) ünïcode ✓",
        "client_ip": "203.0.113.0",
    }
    event.update(overrides)
    return event


@dataclass
class Source:
    """What the test wrote to the raw bucket, and what the warehouse must therefore hold."""

    bucket: str
    client: Any
    rng: random.Random = field(default_factory=lambda: random.Random(4))
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def put(
        self,
        moment: datetime,
        events: list[dict[str, Any]] | None = None,
        shape: str = "ndjson",
        count: int = 1,
    ) -> str:
        """Write one object at `moment` (key time) with `events` (or `count` fresh valid events)."""
        if events is None:
            events = [make_event(moment, self.rng) for _ in range(count)]
        key = event_key(moment, uuid7(ms(moment)))
        if shape == "ndjson":
            lines = [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in events]
            body = "\n".join(lines) + "\n"
        else:
            assert len(events) == 1
            body = json.dumps(events[0], indent=2)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode("utf-8"))
        self.objects[key] = events
        return key

    def put_raw(self, moment: datetime, body: bytes) -> str:
        """Write an object whose body is not meant to load (poison); not part of the expectation."""
        key = event_key(moment, uuid7(ms(moment)))
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key

    def expected(self, keys: list[str] | None = None) -> dict[str, tuple[Any, ...]]:
        """event_id -> comparable row, for every event of the given (default: all) objects."""
        rows: dict[str, tuple[Any, ...]] = {}
        for key in keys if keys is not None else list(self.objects):
            for event in self.objects[key]:
                rows.setdefault(event["event_id"], comparable(event, key))
        return rows


def comparable(event: dict[str, Any], key: str) -> tuple[Any, ...]:
    price = event.get("context_product_price")
    return (
        event["event_id"],
        datetime.fromisoformat(event["event_timestamp"].replace("Z", "+00:00")).astimezone(UTC),
        event["event_name"],
        event.get("user_id"),
        event["client_id"],
        event["session_id"],
        event.get("is_first_visit"),
        event.get("context_product_name"),
        None if price is None else Decimal(str(price)).quantize(Decimal("0.01")),
        event.get("user_agent"),
        key,
    )


def warehouse_rows(db: PgDatabase) -> dict[str, tuple[Any, ...]]:
    """event_id -> comparable row of everything in clickstream_events (read as superuser)."""
    rows = db.query(
        "SELECT event_id::text, event_timestamp, event_name, user_id, client_id, session_id, is_first_visit, "
        "context_product_name, context_product_price, user_agent, source_key FROM clickstream_events"
    )
    return {row[0]: (row[0], row[1].astimezone(UTC), *row[2:]) for row in rows}


def etl_config(db: PgDatabase, bucket: str, **overrides: Any) -> EtlConfig:
    """Config for the ETL as `sbw_etl` against a test warehouse; fast retries."""
    assert db.etl is not None
    env = {
        "DWH_HOST": db.host,
        "DWH_PORT": str(db.port),
        "DWH_USER": db.etl.user,
        "DWH_PASSWORD": db.etl.password,
        "DWH_DATABASE": db.name,
        "RAW_BUCKET": bucket,
        "AWS_REGION": "ap-southeast-1",
        "ETL_RETRY_BASE_SECONDS": "0.05",
        "DWH_CONNECT_TIMEOUT": "3",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return EtlConfig.from_env(env)


def connector(config: EtlConfig, port: int | None = None) -> Any:
    """connect() for run_etl (optionally through a proxy port)."""

    def connect() -> Any:
        kwargs = config.dsn_kwargs(config.password or "")
        if port is not None:
            kwargs["port"] = port
        return psycopg2.connect(**kwargs)

    return connect


def wait_until(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def advisory_locks_held(db: PgDatabase) -> int:
    return db.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    )[0][0]


class TcpProxy:
    """A TCP proxy to PostgreSQL that a test can take down (drop every connection, refuse new ones)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket down() just closed
            return
        finally:
            for sock in (a, b):
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def down(self) -> None:
        """The database 'goes down': every connection dropped, new ones refused."""
        self.up.clear()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        self.listener.close()


class CountingS3:
    """Wraps an S3 client: counts calls and can run a hook before each GetObject."""

    def __init__(self, client: Any, before_get: Any = None) -> None:
        self.client = client
        self.before_get = before_get
        self.lists = 0
        self.gets = 0
        self._lock = threading.Lock()

    def list_objects_v2(self, **kwargs: Any) -> Any:
        with self._lock:
            self.lists += 1
        return self.client.list_objects_v2(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self.gets += 1
            n = self.gets
        if self.before_get is not None:
            self.before_get(n)
        return self.client.get_object(**kwargs)


def unique_id() -> str:
    return uuid.uuid4().hex[:8]
