"""One run of the traffic generator: the simulated sessions sent at their planned times through the
sender, with a progress line on a terminal and a summary at the end.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sbw_ops.catalog import Product
from sbw_ops.traffic_send import Sender, Stats, percentile
from sbw_ops.traffic_simulate import DEFAULT_MAX_EVENT_AGE, Profile, batches, event_time, schedule


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One run of the generator (what the command line describes)."""

    url: str
    seed: int = 1
    rate: float = 5.0
    sessions: int | None = None
    duration: float | None = None
    batch_size: int = 25
    workers: int = 4
    use_gzip: bool = False
    timeout: float = 10.0
    start_time: datetime | None = None  # simulated clock start; default: now - backdate
    backdate: timedelta = timedelta(0)
    time_scale: float = 1.0
    max_event_age: timedelta = DEFAULT_MAX_EVENT_AGE
    profile: Profile = field(default_factory=Profile)
    headers: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if not re.match(r"^https?://", self.url):
            raise ValueError(f"--url {self.url!r} is not an http(s) URL")
        if self.rate <= 0:
            raise ValueError("--rate must be > 0")
        if self.sessions is None and self.duration is None:
            raise ValueError("give --sessions or --duration")
        if self.sessions is not None and self.sessions < 1:
            raise ValueError("--sessions must be >= 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be > 0")
        if not 1 <= self.batch_size <= 500:
            raise ValueError("--batch-size must be 1..500 (the ingest limit)")
        if not 1 <= self.workers <= 64:
            raise ValueError("--workers must be 1..64")
        if self.time_scale < 1:
            raise ValueError("--time-scale must be >= 1")
        if self.backdate < timedelta(0):
            raise ValueError("--backdate must not be negative")
        # The first session starts BROWSE_BUDGET + checkout before its end: keep it in the window.
        if self.backdate + timedelta(hours=1) > self.max_event_age:
            raise ValueError(
                f"--backdate {self.backdate} leaves no margin in the ingest's accepted window of "
                f"{self.max_event_age} (keep it at least 1 hour shorter; see --max-event-age)"
            )
        if self.start_time is not None:
            if self.start_time.tzinfo is None:
                raise ValueError("--start-time needs a UTC offset")
            if self.start_time < datetime.now(UTC) - self.max_event_age + timedelta(hours=1):
                raise ValueError(
                    f"--start-time {self.start_time} is outside the accepted window {self.max_event_age}"
                )
        if self.time_scale > 1 and self.backdate == timedelta(0) and self.start_time is None:
            raise ValueError("--time-scale > 1 needs --backdate (the simulated clock must not pass now)")


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run sent and how the API answered."""

    url: str
    seed: int
    elapsed_seconds: float
    sessions: int
    first_visit_sessions: int
    logged_in_sessions: int
    events: int
    events_by_name: dict[str, int]
    requests: int
    accepted_requests: int
    accepted_events: int
    bot_events: int  # of the accepted events: those whose User-Agent ingest classifies as a bot
    rejected_requests: int
    rejected_events: int
    failed_requests: int
    failed_events: int
    bytes_sent: int
    statuses: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    events_per_second: float
    first_timestamp: str | None
    last_timestamp: str | None
    stopped_because: str
    errors: list[str]
    keys: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.rejected_requests == 0 and self.failed_requests == 0

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "keys"}
        out["ok"] = self.ok
        out["objects_written"] = len(self.keys)
        return out

    def text(self) -> str:
        by_name = ", ".join(f"{name} {count}" for name, count in sorted(self.events_by_name.items()))
        funnel = [self.events_by_name.get(n, 0) for n in ("add_to_cart", "begin_checkout", "purchase")]
        lines = [
            f"traffic: {self.sessions} sessions, {self.events} events in {self.requests} requests "
            f"over {self.elapsed_seconds:.1f} s ({self.events_per_second:.0f} events/s) -> {self.url}",
            f"  accepted: {self.accepted_requests} requests, {self.accepted_events} events "
            f"({self.bot_events} from bots); "
            f"rejected: {self.rejected_requests} requests ({self.rejected_events} events); "
            f"failed: {self.failed_requests} requests ({self.failed_events} events)",
            f"  latency: p50 {self.latency_p50_ms:.1f} ms, p99 {self.latency_p99_ms:.1f} ms, "
            f"max {self.latency_max_ms:.1f} ms; statuses {dict(sorted(self.statuses.items()))}",
            f"  events: {by_name}",
            f"  funnel: add_to_cart {funnel[0]} >= begin_checkout {funnel[1]} >= purchase {funnel[2]}",
            f"  visitors: {self.first_visit_sessions} first-visit sessions, "
            f"{self.sessions - self.first_visit_sessions} returning; {self.logged_in_sessions} logged in",
            f"  event time: {self.first_timestamp} .. {self.last_timestamp}; stopped: {self.stopped_because}",
        ]
        lines.extend(f"  error: {error}" for error in self.errors)
        return "\n".join(lines)


class Progress:
    """A one-line progress bar on a tty (redrawn in place); periodic plain lines otherwise."""

    def __init__(self, stream: TextIO, mode: str, total: Callable[[], float]) -> None:
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.stream = stream
        self.enabled = mode == "always" or (mode == "auto" and tty)
        self.in_place = tty
        self.total = total  # fraction done, 0..1
        self._last = 0.0

    def update(self, stats: Stats, elapsed: float, final: bool = False) -> None:
        if not self.enabled:
            return
        interval = 0.2 if self.in_place else 5.0
        if not final and elapsed - self._last < interval:
            return
        self._last = elapsed
        done = max(0.0, min(1.0, self.total()))
        width = 30
        filled = int(done * width)
        with stats.lock:
            sent = sum(stats.events_by_name.values())
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] {done * 100:5.1f}% "
                f"{stats.sessions} sessions {sent} events {stats.requests} requests "
                f"rejected {stats.rejected_requests} failed {stats.failed_requests} {elapsed:.1f}s"
            )
        if self.in_place:
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))  # clear to end of line
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(
    config: RunConfig,
    products: Sequence[Product],
    *,
    progress_stream: TextIO | None = None,
    progress_mode: str = "never",
    stop: threading.Event | None = None,
) -> Summary:
    """Generate and send traffic as `config` says; return the summary (no printing but progress)."""
    config.check()
    now = datetime.now(UTC)
    start_time = config.start_time or now - config.backdate
    stop = stop or threading.Event()
    stats = Stats()
    sender = Sender(
        config.url,
        stats,
        workers=config.workers,
        use_gzip=config.use_gzip,
        timeout=config.timeout,
        headers=config.headers,
    )
    plans = schedule(
        products,
        seed=config.seed,
        rate=config.rate,
        start_time=start_time,
        time_scale=config.time_scale,
        profile=config.profile,
    )
    t0 = time.monotonic()

    def fraction() -> float:
        parts = []
        if config.sessions:
            parts.append(stats.sessions / config.sessions)
        if config.duration:
            parts.append((time.monotonic() - t0) / config.duration)
        return max(parts)

    bar = Progress(progress_stream or sys.stderr, progress_mode, fraction)
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    stopped = "sessions" if config.sessions else "duration"
    try:
        for plan in plans:
            if config.sessions is not None and stats.sessions >= config.sessions:
                break
            if config.duration is not None and plan.at > config.duration:
                stopped = "duration"
                break
            while True:  # pace to the schedule, stay responsive to stop and the progress bar
                wait = plan.at - (time.monotonic() - t0)
                if wait <= 0 or stop.is_set():
                    break
                stop.wait(min(wait, 0.2))
                bar.update(stats, time.monotonic() - t0)
            if stop.is_set():
                stopped = "interrupted"
                break
            session = plan.session
            if datetime.fromisoformat(session.events[-1]["event_timestamp"]) > datetime.now(UTC):
                stopped = "simulated clock reached now"  # only with --time-scale > 1
                break
            for event in (session.events[0], session.events[-1]):
                moment = datetime.fromisoformat(event["event_timestamp"])
                first_ts = moment if first_ts is None or moment < first_ts else first_ts
                last_ts = moment if last_ts is None or moment > last_ts else last_ts
            with stats.lock:
                stats.sessions += 1
                stats.first_visit_sessions += session.first_visit
                stats.logged_in_sessions += session.logged_in
                stats.events_by_name.update(e["event_name"] for e in session.events)
            for batch in batches(session.events, config.batch_size):
                sender.submit(batch, session.user_agent)
            bar.update(stats, time.monotonic() - t0)
    finally:
        sender.close()
    elapsed = time.monotonic() - t0
    bar.update(stats, elapsed, final=True)
    events = sum(stats.events_by_name.values())
    return Summary(
        url=config.url,
        seed=config.seed,
        elapsed_seconds=round(elapsed, 3),
        sessions=stats.sessions,
        first_visit_sessions=stats.first_visit_sessions,
        logged_in_sessions=stats.logged_in_sessions,
        events=events,
        events_by_name=dict(sorted(stats.events_by_name.items())),
        requests=stats.requests,
        accepted_requests=stats.accepted_requests,
        accepted_events=stats.accepted_events,
        bot_events=stats.bot_events,
        rejected_requests=stats.rejected_requests,
        rejected_events=stats.rejected_events,
        failed_requests=stats.failed_requests,
        failed_events=stats.failed_events,
        bytes_sent=stats.bytes_sent,
        statuses=dict(stats.statuses),
        latency_p50_ms=round(percentile(stats.latencies, 50) * 1000, 2),
        latency_p99_ms=round(percentile(stats.latencies, 99) * 1000, 2),
        latency_max_ms=round(max(stats.latencies, default=0.0) * 1000, 2),
        events_per_second=round(events / elapsed, 1) if elapsed > 0 else 0.0,
        first_timestamp=event_time(first_ts.astimezone(UTC)) if first_ts else None,
        last_timestamp=event_time(last_ts.astimezone(UTC)) if last_ts else None,
        stopped_because=stopped,
        errors=list(stats.errors),
        keys=list(stats.keys),
    )
