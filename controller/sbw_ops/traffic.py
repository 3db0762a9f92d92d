"""Synthetic shoppers: realistic shop traffic posted to any clickstream ingest URL (`traffic` command).

Model, in one paragraph: visitors' batches arrive at the API as a Poisson process (`--rate` sessions
per second, exponential gaps from the seeded RNG). Each arrival is one shopper session, simulated on
a clock advanced by think times and *ending* at the arrival (a tracker flushes its batch when the
page is hidden), so no event is ever in the future. A session lands on the home, a category or a
product page, browses (page views, product views over the catalog with a popularity skew, searches),
adds to the cart, and goes through the funnel (begin_checkout, purchase; one event per cart line,
so purchases <= checkouts <= add_to_carts) with drop-off rates. Visitors are new (is_first_visit)
or returning (from the run or from a seeded prior customer base); registered visitors carry a
Cognito-like `sub` as user_id (identity_source cognito) when logged in, may log in or sign up
at checkout, and sometimes log out. Timestamps are RFC 3339 with the visitor's UTC offset.

Everything is deterministic for a `--seed` and a `--start-time`. Events are posted in batches
(`{"events": [...]}`, optionally gzip) by a few worker threads, each with a keep-alive connection.
Exit code: 0 when every event was accepted, 1 when the API rejected (4xx) or failed (after
retries) anything, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip as gzip_module
import json
import math
import os
import queue
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import requests
from requests.adapters import HTTPAdapter
from sbw_clickstream import contract
from urllib3.util.retry import Retry

from sbw_ops import catalog as catalog_module
from sbw_ops.catalog import Product

DEFAULT_MAX_EVENT_AGE = timedelta(days=7)  # the ingest function's default accepted window
MIN_REVISIT_GAP = timedelta(minutes=30)  # a new session needs 30 minutes of inactivity
MAX_THINK_SECONDS = 90.0  # below the 30-minute inactivity rule by far
BROWSE_BUDGET = timedelta(minutes=20)  # a session stops browsing after this
MAX_SESSION = timedelta(minutes=45)  # browse budget + the longest checkout, with margin
PRIOR_CUSTOMER_BASE = 5000  # size of the seeded base of visitors who came before the run
USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
# Where the shop's visitors are (the platform runs in ap-southeast-1): UTC offsets and weights.
UTC_OFFSETS: tuple[tuple[int, float], ...] = ((8 * 60, 0.5), (7 * 60, 0.3), (9 * 60, 0.1), (5 * 60 + 30, 0.1))
SEARCH_TERMS: tuple[str, ...] = ("headphones", "coffee", "running shoes", "serum", "keyboard", "gift", "sale")


# --- shopper model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """Behaviour rates of the simulated shoppers (probabilities unless said otherwise)."""

    returning_share: float = 0.35  # sessions by a returning visitor
    registered_share: float = 0.45  # returning visitors who have a shop (Cognito) account
    new_registered_share: float = 0.1  # new devices of people who already have an account
    remembered_login: float = 0.6  # registered returning visitors whose Cognito token is still valid
    login_on_visit: float = 0.35  # registered visitors not remembered who log in while browsing
    mean_pages: float = 6.0  # mean page views per session (geometric)
    max_pages: int = 40
    search_share: float = 0.12  # of browsing steps
    product_share: float = 0.55  # of browsing steps (the rest are category pages)
    add_to_cart_rate: float = 0.18  # per product view of a product in stock
    remove_from_cart_rate: float = 0.1  # per add to cart
    max_cart_lines: int = 8
    checkout_rate: float = 0.5  # sessions with a cart that begin the checkout
    purchase_rate: float = 0.65  # checkouts that end with a purchase
    sign_up_rate: float = 0.3  # guests without account at checkout who sign up
    logout_rate: float = 0.1  # logged-in sessions ending with a logout

    def __post_init__(self) -> None:
        for name in (
            "returning_share",
            "registered_share",
            "new_registered_share",
            "remembered_login",
            "login_on_visit",
            "search_share",
            "product_share",
            "add_to_cart_rate",
            "remove_from_cart_rate",
            "checkout_rate",
            "purchase_rate",
            "sign_up_rate",
            "logout_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability (0..1)")
        if self.search_share + self.product_share > 1.0:
            raise ValueError("search_share + product_share must not exceed 1")
        if self.mean_pages < 1:
            raise ValueError("mean_pages must be >= 1")


@dataclass(slots=True)
class Visitor:
    """A browser (client id) and, when registered, the shop account's Cognito sub."""

    client_id: str
    user_sub: str | None
    utc_offset: timedelta
    user_agent: str
    sessions: int = 0  # sessions before the current one (0: first visit)
    last_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """One simulated session: its visitor's request headers and its events, in time order."""

    session_id: str
    client_id: str
    user_agent: str
    events: list[dict[str, Any]]
    first_visit: bool
    logged_in: bool  # logged in at any point of the session


class CatalogSampler:
    """Picks products with a popularity skew (Zipf over a seeded ranking), overall or in a category."""

    def __init__(self, products: Sequence[Product], seed: int) -> None:
        if not products:
            raise ValueError("the catalog is empty")
        ranking = sorted(products, key=lambda p: p.product_id)
        random.Random(f"{seed}:popularity").shuffle(ranking)
        self.products = ranking
        self.categories = sorted({p.category for p in ranking})
        self._all = self._cumulative(ranking)
        self._by_category = {
            c: (
                [p for p in ranking if p.category == c],
                self._cumulative([p for p in ranking if p.category == c]),
            )
            for c in self.categories
        }

    @staticmethod
    def _cumulative(items: Sequence[Product]) -> list[float]:
        total, out = 0.0, []
        for rank in range(len(items)):
            total += 1.0 / (rank + 1) ** 0.9
            out.append(total)
        return out

    def pick(self, rng: random.Random, category: str | None = None) -> Product:
        items, weights = (self.products, self._all) if category is None else self._by_category[category]
        index = bisect.bisect_left(weights, rng.random() * weights[-1])
        return items[min(index, len(items) - 1)]


def _uuid(rng: random.Random) -> str:
    """A UUIDv4 string from the seeded RNG (deterministic, unlike uuid.uuid4)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    point = rng.random() * sum(w for _, w in pairs)
    for value, weight in pairs:
        point -= weight
        if point < 0:
            return value
    return pairs[-1][0]


def event_time(moment: datetime) -> str:
    """How a browser writes `event_timestamp`: milliseconds, in the visitor's own UTC offset."""
    return contract.format_timestamp(moment, utc=False, timespec="milliseconds")


class ShopperSimulator:
    """Turns arrivals into sessions of contract-conforming events; deterministic for a seed."""

    def __init__(self, products: Sequence[Product], seed: int, profile: Profile | None = None) -> None:
        self.profile = profile or Profile()
        self.sampler = CatalogSampler(products, seed)
        self.seed = seed
        self._rng = random.Random(f"{seed}:sessions")
        self._in_run: list[Visitor] = []
        self._prior: dict[int, Visitor] = {}

    # visitors --------------------------------------------------------------------------------
    def _new_visitor(self, rng: random.Random, registered: bool, prior_sessions: int) -> Visitor:
        return Visitor(
            client_id=_uuid(rng),
            user_sub=_uuid(rng) if registered else None,
            utc_offset=timedelta(minutes=_weighted(rng, UTC_OFFSETS)),
            user_agent=USER_AGENTS[int(rng.random() * len(USER_AGENTS))],
            sessions=prior_sessions,
        )

    def _prior_visitor(self, index: int) -> Visitor:
        """Visitor `index` of the customer base that visited before this run (same for a seed)."""
        if index not in self._prior:
            rng = random.Random(f"{self.seed}:prior:{index}")
            registered = rng.random() < self.profile.registered_share
            self._prior[index] = self._new_visitor(rng, registered, prior_sessions=1 + int(rng.random() * 5))
        return self._prior[index]

    def _visitor_for(self, start: datetime) -> Visitor:
        rng, profile = self._rng, self.profile
        if rng.random() < profile.returning_share:
            # A visitor from this run when one has been away for 30 minutes, else one from before it.
            eligible_cut = start - MIN_REVISIT_GAP
            candidates = [self._prior_visitor(int(rng.random() * PRIOR_CUSTOMER_BASE))]
            if self._in_run and rng.random() < 0.5:
                candidates.insert(0, self._in_run[int(rng.random() * len(self._in_run))])
            for candidate in candidates:
                if candidate.last_end is None or candidate.last_end <= eligible_cut:
                    return candidate
        visitor = self._new_visitor(rng, rng.random() < profile.new_registered_share, prior_sessions=0)
        self._in_run.append(visitor)
        if len(self._in_run) > 10_000:
            self._in_run = self._in_run[-5_000:]
        return visitor

    # sessions --------------------------------------------------------------------------------
    def session(self, end: datetime) -> Session:
        """Simulate one session whose last event happens at `end` (an aware datetime)."""
        rng, profile = self._rng, self.profile
        offsets: list[float] = []  # seconds after the session's start, one per planned event
        plan: list[tuple[str, Product | None, bool]] = []  # (event, product, logged_in after)

        # First decide who the visitor is; the session's start is only known after simulating.
        visitor = self._visitor_for(end - MAX_SESSION)
        first_visit = visitor.sessions == 0
        logged_in = (
            visitor.user_sub is not None and not first_visit and rng.random() < profile.remembered_login
        )
        ever_logged_in = logged_in
        cart: list[Product] = []
        clock = 0.0

        def emit(name: str, product: Product | None = None, think: tuple[float, float] = (2.0, 0.8)) -> None:
            nonlocal clock
            plan.append((name, product, logged_in))
            offsets.append(clock)
            median, sigma = think
            clock += min(MAX_THINK_SECONDS, rng.lognormvariate(math.log(median), sigma))

        def view_product(product: Product) -> None:
            emit("page_view", product, think=(0.4, 0.5))
            emit("product_view", product, think=(20.0, 0.9))
            if (
                product.stock > 0
                and len(cart) < profile.max_cart_lines
                and rng.random() < profile.add_to_cart_rate
            ):
                emit("add_to_cart", product, think=(6.0, 0.7))
                cart.append(product)
                if rng.random() < profile.remove_from_cart_rate:
                    removed = cart.pop(int(rng.random() * len(cart)))
                    emit("remove_from_cart", removed, think=(4.0, 0.7))

        def log_in() -> None:
            nonlocal logged_in, ever_logged_in
            logged_in = ever_logged_in = True
            emit("login", think=(5.0, 0.6))

        category = self.sampler.categories[int(rng.random() * len(self.sampler.categories))]
        landing = rng.random()
        if landing < 0.35:
            view_product(self.sampler.pick(rng))
        elif landing < 0.6:
            emit("page_view", think=(12.0, 0.8))  # a category page
        else:
            emit("page_view", think=(10.0, 0.8))  # the home page
        pages = min(
            profile.max_pages,
            1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - 1.0 / profile.mean_pages)),
        )
        for _ in range(pages - 1):
            if clock > BROWSE_BUDGET.total_seconds():
                break
            if (
                visitor.user_sub is not None
                and not logged_in
                and rng.random() < profile.login_on_visit / profile.mean_pages
            ):
                log_in()
            step = rng.random()
            if step < profile.search_share:
                emit("search", think=(3.0, 0.5))
                emit("page_view", think=(8.0, 0.8))  # results page
            elif step < profile.search_share + profile.product_share:
                view_product(self.sampler.pick(rng, category if rng.random() < 0.6 else None))
            else:
                category = self.sampler.categories[int(rng.random() * len(self.sampler.categories))]
                emit("page_view", think=(12.0, 0.8))
        if cart and rng.random() < profile.checkout_rate:
            emit("page_view", think=(8.0, 0.6))  # the cart page
            if not logged_in:
                if visitor.user_sub is not None:
                    log_in()
                elif rng.random() < profile.sign_up_rate:
                    visitor.user_sub = _uuid(rng)
                    logged_in = ever_logged_in = True
                    emit("sign_up", think=(20.0, 0.5))
            for product in cart:
                emit("begin_checkout", product, think=(1.0, 0.5))
            if rng.random() < profile.purchase_rate:
                for product in cart:
                    emit("purchase", product, think=(0.5, 0.5))
        if logged_in and rng.random() < profile.logout_rate:
            emit("logout", think=(1.0, 0.5))
            logged_in = False

        session_id = _uuid(rng)
        span = offsets[-1]
        tz = timezone(visitor.utc_offset)
        start = end - timedelta(seconds=span)
        events: list[dict[str, Any]] = []
        for (name, product, state), offset in zip(plan, offsets, strict=True):
            # "logout" is sent by the user who logs out; the login state it carries is the one before.
            signed_in = state or name == "logout"
            event: dict[str, Any] = {
                "event_timestamp": event_time((start + timedelta(seconds=offset)).astimezone(tz)),
                "event_name": name,
                "user_id": visitor.user_sub if signed_in else None,
                "user_login_state": "logged_in" if signed_in else "guest",
                "identity_source": "cognito" if signed_in else "anonymous",
                "client_id": visitor.client_id,
                "session_id": session_id,
                "is_first_visit": first_visit,
            }
            if product is not None:
                event.update(product.context())
            events.append(event)
        visitor.sessions += 1
        visitor.last_end = end
        return Session(session_id, visitor.client_id, visitor.user_agent, events, first_visit, ever_logged_in)


def poisson_gaps(rng: random.Random, rate: float) -> Iterator[float]:
    """Inter-arrival gaps (seconds) of a Poisson process with `rate` arrivals per second."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    while True:
        yield rng.expovariate(rate)


@dataclass(frozen=True, slots=True)
class Plan:
    """One scheduled session: when to send it (seconds after the run started) and what."""

    at: float
    session: Session


def schedule(
    products: Sequence[Product],
    *,
    seed: int,
    rate: float,
    start_time: datetime,
    time_scale: float = 1.0,
    profile: Profile | None = None,
) -> Iterator[Plan]:
    """Endless stream of sessions: Poisson arrivals at `rate`/s (wall clock), simulated clock from
    `start_time` running `time_scale` times faster than the wall clock; each session ends at its arrival."""
    if start_time.tzinfo is None:
        raise ValueError("start_time must be timezone-aware")
    simulator = ShopperSimulator(products, seed, profile)
    at = 0.0
    for gap in poisson_gaps(random.Random(f"{seed}:arrivals"), rate):
        at += gap
        yield Plan(at, simulator.session(start_time + timedelta(seconds=at * time_scale)))


def batches(events: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """The session's events in request-sized chunks (a tracker flushes every `size` events)."""
    for index in range(0, len(events), size):
        yield list(events[index : index + size])


# --- sending ------------------------------------------------------------------------------------


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
    rejected_requests: int = 0
    rejected_events: int = 0
    failed_requests: int = 0
    failed_events: int = 0
    bytes_sent: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def record(self, events: int, status: int | None, latency: float, detail: str, key: str | None) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(latency)
            self.statuses[str(status) if status is not None else "error"] += 1
            if status is not None and 200 <= status < 300:
                self.accepted_requests += 1
                self.accepted_events += events
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
                read=0,  # a request that reached the API is never re-sent blindly
                status=self.retries,
                status_forcelist=(429, 502, 503, 504),  # ingest stores nothing on these: safe to retry
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
        detail, key = "", None
        try:
            response = self._session().post(self.url, data=body, headers=headers, timeout=self.timeout)
            status = response.status_code
            if 200 <= status < 300:
                with contextlib.suppress(ValueError, AttributeError):
                    key = response.json().get("key")
            else:
                detail = f"HTTP {status}: {response.text[:500]}"
        except requests.RequestException as exc:
            detail = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.record(len(events), status, time.perf_counter() - started, detail, key)


# --- running ------------------------------------------------------------------------------------


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
            f"  accepted: {self.accepted_requests} requests, {self.accepted_events} events; "
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


# --- catalog sources and command line -----------------------------------------------------------


def load_products(catalog_dsn: str | None, catalog_csv: Path | None) -> list[Product]:
    """The catalog from the OLTP database (`products` table) or from a CSV (the committed sample)."""
    if catalog_dsn:
        import psycopg2
        import psycopg2.extras

        conn = psycopg2.connect(catalog_dsn)
        try:
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(CATALOG_QUERY)
                rows = cur.fetchall()
        finally:
            conn.close()
        products = [catalog_module.product_from_mapping(dict(row)) for row in rows]
        if not products:
            raise ValueError("the products table is empty")
        return products
    return catalog_module.load_csv(catalog_csv or catalog_module.SAMPLE_CSV)


# clickstream_web (roles/oltp_schema/files/migrations): stock lives in inventory.quantity.
CATALOG_QUERY = """
SELECT p.product_id, p.name, p.category, p.brand, p.price, p.discount_price, p.url_path,
       COALESCE(i.quantity, 0) AS stock
FROM public.products AS p LEFT JOIN public.inventory AS i USING (product_id)
ORDER BY p.product_id
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `36h`, `2d` -> timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 36h, 2d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="traffic",
        description="Synthetic shoppers: post realistic clickstream traffic to an ingest URL.",
        epilog="Exit codes: 0 all accepted, 1 something rejected or failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SBW_INGEST_URL"),
        help="ingest URL, e.g. http://127.0.0.1:8080/clickstream (default: $SBW_INGEST_URL)",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed: same seed, same traffic (default 1)")
    parser.add_argument("--rate", type=float, default=5.0, help="sessions per second, Poisson (default 5)")
    parser.add_argument("--sessions", type=int, help="stop after this many sessions")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--batch-size", type=int, default=25, help="events per request (1..500, default 25)")
    parser.add_argument("--workers", type=int, default=4, help="sending threads (default 4)")
    parser.add_argument("--gzip", action="store_true", help="send bodies with Content-Encoding: gzip")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--catalog-dsn", help="read products from this OLTP database (clickstream_web)")
    source.add_argument("--catalog-csv", type=Path, help="read products from this CSV (default: the sample)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument(
        "--backdate",
        type=parse_duration,
        default=timedelta(0),
        help="start the simulated clock this long ago (2d)",
    )
    clock.add_argument("--start-time", type=parse_time, help="simulated clock start (RFC 3339, with offset)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per wall second (>1 with --backdate spreads traffic over the past)",
    )
    parser.add_argument(
        "--max-event-age",
        type=parse_duration,
        default=DEFAULT_MAX_EVENT_AGE,
        help="the ingest's accepted window (MAX_EVENT_AGE_HOURS, default 7d): --backdate must fit in it",
    )
    parser.add_argument("--returning-share", type=float, help="share of sessions by returning visitors")
    parser.add_argument("--add-to-cart-rate", type=float, help="add to cart per product view")
    parser.add_argument("--checkout-rate", type=float, help="carts that begin the checkout")
    parser.add_argument("--purchase-rate", type=float, help="checkouts that end with a purchase")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto", help="progress bar"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    profile = Profile()
    overrides = {
        name: getattr(args, name)
        for name in ("returning_share", "add_to_cart_rate", "checkout_rate", "purchase_rate")
        if getattr(args, name) is not None
    }
    if overrides:
        profile = replace(profile, **overrides)
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {item!r} is not NAME:VALUE")
        headers[name.strip()] = value.strip()
    if not args.url:
        raise ValueError("--url is required (or set SBW_INGEST_URL)")
    return RunConfig(
        url=args.url,
        seed=args.seed,
        rate=args.rate,
        sessions=args.sessions,
        duration=args.duration,
        batch_size=args.batch_size,
        workers=args.workers,
        use_gzip=args.gzip,
        timeout=args.timeout,
        start_time=args.start_time,
        backdate=args.backdate,
        time_scale=args.time_scale,
        max_event_age=args.max_event_age,
        profile=profile,
        headers=headers,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.sessions is None and args.duration is None:
            config = replace(config, sessions=100)
        config.check()
        products = load_products(args.catalog_dsn, args.catalog_csv)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    except Exception as exc:  # database errors: psycopg2 is imported lazily
        parser.error(f"cannot read the catalog: {exc}")
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish cleanly, still summarise
    try:
        summary = run(config, products, progress_stream=sys.stderr, progress_mode=args.progress, stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.text())
    if stop.is_set():
        return 130
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
