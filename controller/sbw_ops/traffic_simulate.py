"""Synthetic shoppers, simulated: sessions of contract-conforming events and when they are sent.

Visitors' batches arrive as a Poisson process; each arrival is one shopper session simulated on a
clock advanced by think times and *ending* at the arrival, so no event is in the future. The model
(funnel, drop-off rates, new/returning and logged-in visitors, the visitor's UTC offset) is described
in `sbw_ops.traffic`'s docstring. Deterministic for a seed and a start time; nothing here sends.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sbw_clickstream import contract, keys

from sbw_ops.catalog import Product
from sbw_ops.traffic_context import (
    AGENTS_BY_DEVICE,
    Browser,
    Page,
    browser_for,
    page_context,
    pick_source,
    user_agent_for,
    weighted_at,
)

DEFAULT_MAX_EVENT_AGE = timedelta(days=7)  # the ingest function's default accepted window
MIN_REVISIT_GAP = timedelta(minutes=30)  # a new session needs 30 minutes of inactivity
MAX_THINK_SECONDS = 90.0  # below the 30-minute inactivity rule by far
BROWSE_BUDGET = timedelta(minutes=20)  # a session stops browsing after this
MAX_SESSION = timedelta(minutes=45)  # browse budget + the longest checkout, with margin
PRIOR_CUSTOMER_BASE = 5000  # size of the seeded base of visitors who came before the run
# Every User-Agent a simulated visitor may send (humans by device class, then crawlers).
USER_AGENTS: tuple[str, ...] = tuple(agent for agents in AGENTS_BY_DEVICE.values() for agent in agents)
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
    bot_share: float = 0.03  # new visitors that are crawlers (a bot User-Agent)

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
            "bot_share",
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
    browser: Browser
    sessions: int = 0  # sessions before the current one (0: first visit)
    last_end: datetime | None = None

    @property
    def user_agent(self) -> str:
        return self.browser.user_agent


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
    return weighted_at(rng.random(), pairs)


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
        self._sessions = 0  # sessions simulated: names each session's own context RNG

    # visitors --------------------------------------------------------------------------------
    def _new_visitor(self, rng: random.Random, registered: bool, prior_sessions: int) -> Visitor:
        client_id = _uuid(rng)
        user_sub = _uuid(rng) if registered else None
        offset = _weighted(rng, UTC_OFFSETS)
        # One draw of the schedule's RNG decides bot or device (as before the browser had more
        # fields); the rest of the browser comes from the visitor's own RNG, so adding fields to it
        # never shifts the schedule.
        draw = rng.random()
        browser_rng = random.Random(f"{self.seed}:browser:{client_id}")
        device, agent = user_agent_for(draw, self.profile.bot_share, browser_rng)
        return Visitor(
            client_id=client_id,
            user_sub=user_sub,
            utc_offset=timedelta(minutes=offset),
            browser=browser_for(device, agent, offset, browser_rng),
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
        # (event, product, logged_in after, the page it opens: None = on the page before)
        plan: list[tuple[str, Product | None, bool, Page | None]] = []
        # Traffic source and search terms from the session's own RNG: the schedule's draws stay as
        # they were before pages existed (same seed, same funnel).
        self._sessions += 1
        context_rng = random.Random(f"{self.seed}:context:{self._sessions}")
        source = pick_source(context_rng)

        # First decide who the visitor is; the session's start is only known after simulating.
        visitor = self._visitor_for(end - MAX_SESSION)
        first_visit = visitor.sessions == 0
        logged_in = (
            visitor.user_sub is not None and not first_visit and rng.random() < profile.remembered_login
        )
        ever_logged_in = logged_in
        cart: list[Product] = []
        clock = 0.0

        def emit(
            name: str,
            product: Product | None = None,
            think: tuple[float, float] = (2.0, 0.8),
            page: Page | None = None,
        ) -> None:
            nonlocal clock
            plan.append((name, product, logged_in, page))
            offsets.append(clock)
            median, sigma = think
            clock += min(MAX_THINK_SECONDS, rng.lognormvariate(math.log(median), sigma))

        def view_product(product: Product) -> None:
            emit("page_view", product, think=(0.4, 0.5), page=Page.product(product))
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
            emit("page_view", think=(12.0, 0.8), page=Page.category(category))
        else:
            emit("page_view", think=(10.0, 0.8), page=Page.home())
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
                term = SEARCH_TERMS[int(context_rng.random() * len(SEARCH_TERMS))]
                emit("page_view", think=(8.0, 0.8), page=Page.search(term))
            elif step < profile.search_share + profile.product_share:
                view_product(self.sampler.pick(rng, category if rng.random() < 0.6 else None))
            else:
                category = self.sampler.categories[int(rng.random() * len(self.sampler.categories))]
                emit("page_view", think=(12.0, 0.8), page=Page.category(category))
        if cart and rng.random() < profile.checkout_rate:
            emit("page_view", think=(8.0, 0.6), page=Page.cart())
            if not logged_in:
                if visitor.user_sub is not None:
                    log_in()
                elif rng.random() < profile.sign_up_rate:
                    visitor.user_sub = _uuid(rng)
                    logged_in = ever_logged_in = True
                    emit("sign_up", think=(20.0, 0.5))
            checkout = Page.checkout()
            for product in cart:
                emit("begin_checkout", product, think=(1.0, 0.5), page=checkout)
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
        # Ids minted at the source, like the tracker: a retried request re-sends the same ids, so the
        # warehouse keeps each event once. Their own RNG keeps the rest of the schedule unchanged.
        id_rng = random.Random(f"{self.seed}:ids:{session_id}")
        contexts = page_context([page for *_, page in plan], source)
        for (name, product, state, _), offset, page_fields in zip(plan, offsets, contexts, strict=True):
            # "logout" is sent by the user who logs out; the login state it carries is the one before.
            signed_in = state or name == "logout"
            moment = start + timedelta(seconds=offset)
            event: dict[str, Any] = {
                "event_id": str(keys.uuid7_from(int(moment.timestamp() * 1000), id_rng.getrandbits(80))),
                "event_timestamp": event_time(moment.astimezone(tz)),
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
            event.update(page_fields)
            event.update(visitor.browser.fields())
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
