"""Sending synthetic traffic: batches posted by worker threads with keep-alive connections and retries,
and the statistics of what the API answered (accepted, rejected, failed, latencies).
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import json
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from sbw_clickstream.enrich_useragent import classify_user_agent
from urllib3.util.retry import Retry


@dataclass(slots=True)
class Stats:
    """What was sent and what the API answered (thread-safe through `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0
    first_visit_sessions: int = 0
    logged_in_sessions: int = 0
    events_by_name: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    accepted_requests: int = 0
    accepted_events: int = 0
    bot_events: int = 0  # accepted events whose User-Agent ingest classifies as a bot
    rejected_requests: int = 0
    rejected_events: int = 0
    failed_requests: int = 0
    failed_events: int = 0
    bytes_sent: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def record(
        self,
        events: int,
        status: int | None,
        latency: float,
        detail: str,
        key: str | None,
        rejected: int = 0,
        is_bot: bool = False,
    ) -> None:
        """One request's outcome; `rejected`: events of a 200 answered by index as invalid; `is_bot`:
        the request's User-Agent is a crawler's (by ingest's own rules)."""
        with self.lock:
            self.requests += 1
            self.latencies.append(latency)
            self.statuses[str(status) if status is not None else "error"] += 1
            if status is not None and 200 <= status < 300:
                self.accepted_requests += 1
                self.accepted_events += events - rejected
                if is_bot:
                    self.bot_events += events - rejected
                self.rejected_events += rejected
                if key:
                    self.keys.append(key)
            elif status is not None and 400 <= status < 500:
                self.rejected_requests += 1
                self.rejected_events += events
            else:
                self.failed_requests += 1
                self.failed_events += events
            if detail and len(self.errors) < 5 and detail not in self.errors:
                self.errors.append(detail)  # a few distinct samples


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of `values`; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class Sender:
    """Posts batches with `workers` threads, each keeping its own keep-alive connection (requests)."""

    def __init__(
        self,
        url: str,
        stats: Stats,
        *,
        workers: int = 4,
        use_gzip: bool = False,
        timeout: float = 10.0,
        retries: int = 3,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.stats = stats
        self.use_gzip = use_gzip
        self.timeout = timeout
        self.retries = retries
        self.headers = headers or {}
        self._queue: queue.Queue[tuple[list[dict[str, Any]], str] | None] = queue.Queue(maxsize=workers * 8)
        self._local = threading.local()
        self._threads = [
            threading.Thread(target=self._work, name=f"traffic-sender-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, events: list[dict[str, Any]], user_agent: str) -> None:
        """Queue one batch (blocks when the workers are behind: back-pressure on the schedule)."""
        self._queue.put((events, user_agent))

    def close(self) -> None:
        """Wait for every queued batch to be sent, then stop the workers."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            retry = Retry(
                total=self.retries,
                connect=self.retries,
                # Every event carries its event_id from the schedule, so re-sending a request whose
                # answer was lost (read timeout, 502/503/504 after the PUT landed) stores nothing twice:
                # the warehouse keeps each event_id once.
                read=self.retries,
                status=self.retries,
                status_forcelist=(429, 502, 503, 504),
                allowed_methods=None,
                backoff_factor=0.2,
                respect_retry_after_header=False,
                raise_on_status=False,
            )
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=retry))
            session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=retry))
            self._local.session = session
        return session

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            events, user_agent = item
            self.post(events, user_agent)

    def post(self, events: list[dict[str, Any]], user_agent: str) -> None:
        """POST one batch and record the outcome."""
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": user_agent, **self.headers}
        if self.use_gzip:
            body = gzip_module.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        with self.stats.lock:
            self.stats.bytes_sent += len(body)
        started = time.perf_counter()
        status: int | None = None
        detail, key, rejected = "", None, 0
        try:
            response = self._session().post(self.url, data=body, headers=headers, timeout=self.timeout)
            status = response.status_code
            if 200 <= status < 300:
                with contextlib.suppress(ValueError, AttributeError):
                    answer = response.json()
                    key = answer.get("key")
                    rejected = len(answer.get("rejected") or ())
                    if rejected:
                        detail = f"HTTP {status}: {rejected} events rejected: {response.text[:400]}"
            else:
                detail = f"HTTP {status}: {response.text[:500]}"
        except requests.RequestException as exc:
            detail = f"{type(exc).__name__}: {exc}"[:500]
        # The same classification ingest stores as is_bot, so the summary's bot_events is what the
        # dashboard's bot filter removes.
        is_bot = classify_user_agent(user_agent).is_bot
        self.stats.record(len(events), status, time.perf_counter() - started, detail, key, rejected, is_bot)
