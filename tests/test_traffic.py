"""Synthetic shoppers: the model (determinism, funnel, contract, Poisson arrivals) and the command line."""

from __future__ import annotations

import io
import itertools
import json
import random
import socket
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sbw_clickstream.contract import parse_timestamp, validate_event
from sbw_ops import catalog, traffic

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def products() -> list[catalog.Product]:
    return catalog.load_csv()


def sessions(products: list[catalog.Product], count: int, seed: int = 11, **kwargs) -> list[traffic.Session]:
    plans = traffic.schedule(products, seed=seed, rate=kwargs.pop("rate", 20.0), start_time=START, **kwargs)
    return [plan.session for plan in itertools.islice(plans, count)]


def test_same_seed_same_traffic_other_seed_other_traffic(products) -> None:
    first = [
        (p.at, p.session.events)
        for p in itertools.islice(traffic.schedule(products, seed=3, rate=5, start_time=START), 200)
    ]
    again = [
        (p.at, p.session.events)
        for p in itertools.islice(traffic.schedule(products, seed=3, rate=5, start_time=START), 200)
    ]
    other = [
        (p.at, p.session.events)
        for p in itertools.islice(traffic.schedule(products, seed=4, rate=5, start_time=START), 200)
    ]
    assert first == again
    assert first != other


def test_every_event_is_valid_under_the_contract(products) -> None:
    generated = sessions(products, 1500)
    names: Counter[str] = Counter()
    for session in generated:
        for event in session.events:
            assert validate_event(event) == [], event
            names[event["event_name"]] += 1
    # every kind of event the shop sends shows up in a run of this size
    for name in (
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "begin_checkout",
        "purchase",
    ):
        assert names[name] > 0, name
    for name in ("search", "login", "logout", "sign_up"):
        assert names[name] > 0, name


def test_funnel_is_monotonic_overall_and_per_session(products) -> None:
    generated = sessions(products, 2000, seed=5)
    totals: Counter[str] = Counter()
    for session in generated:
        counts = Counter(e["event_name"] for e in session.events)
        totals.update(counts)
        assert counts["purchase"] <= counts["begin_checkout"] <= counts["add_to_cart"]
        purchased = [e["context_product_id"] for e in session.events if e["event_name"] == "purchase"]
        checked_out = [e["context_product_id"] for e in session.events if e["event_name"] == "begin_checkout"]
        assert not purchased or purchased == checked_out
    assert 0 < totals["purchase"] < totals["begin_checkout"] < totals["add_to_cart"] < totals["product_view"]
    # drop-off rates land near the profile's: half the carts check out, ~65% of those purchase
    carts = sum(1 for s in generated if any(e["event_name"] == "add_to_cart" for e in s.events))
    checkouts = sum(1 for s in generated if any(e["event_name"] == "begin_checkout" for e in s.events))
    purchases = sum(1 for s in generated if any(e["event_name"] == "purchase" for e in s.events))
    assert 0.35 < checkouts / carts < 0.65
    assert 0.5 < purchases / checkouts < 0.8


def test_funnel_rates_follow_the_profile(products) -> None:
    no_checkout = traffic.Profile(checkout_rate=0.0)
    generated = sessions(products, 300, profile=no_checkout)
    names = Counter(e["event_name"] for s in generated for e in s.events)
    assert names["add_to_cart"] > 0
    assert names["begin_checkout"] == 0 and names["purchase"] == 0


def test_sessions_keep_time_order_ids_and_identity(products) -> None:
    generated = sessions(products, 800, seed=9)
    returning = logged_in = 0
    for session in generated:
        stamps = [parse_timestamp(e["event_timestamp"]) for e in session.events]
        assert stamps == sorted(stamps)
        # a session is never interrupted by 30 minutes of inactivity, and lasts under MAX_SESSION
        assert all(b - a < timedelta(minutes=30) for a, b in itertools.pairwise(stamps))
        assert stamps[-1] - stamps[0] < traffic.MAX_SESSION
        assert {e["session_id"] for e in session.events} == {session.session_id}
        assert {e["client_id"] for e in session.events} == {session.client_id}
        assert {e["is_first_visit"] for e in session.events} == {session.first_visit}
        offsets = {parse_timestamp(e["event_timestamp"]).utcoffset() for e in session.events}
        assert len(offsets) == 1 and offsets != {timedelta(0)}  # the visitor's own offset
        for event in session.events:
            if event["user_login_state"] == "logged_in":
                assert event["identity_source"] == "cognito"
                assert event["user_id"] and len(event["user_id"]) == 36
            else:
                assert event["user_id"] is None and event["identity_source"] == "anonymous"
        returning += not session.first_visit
        logged_in += session.logged_in
    assert 0.25 < returning / len(generated) < 0.45  # Profile.returning_share = 0.35
    assert 0.05 < logged_in / len(generated) < 0.4


def test_a_logged_in_user_keeps_the_same_sub_across_sessions(products) -> None:
    subs_by_client: dict[str, set[str]] = {}
    for session in sessions(products, 3000, seed=21, rate=0.01):  # slow arrivals: visitors come back
        for event in session.events:
            if event["user_id"]:
                subs_by_client.setdefault(event["client_id"], set()).add(event["user_id"])
    assert subs_by_client
    assert all(len(subs) == 1 for subs in subs_by_client.values())
    clients = Counter(s.client_id for s in sessions(products, 3000, seed=21, rate=0.01))
    assert max(clients.values()) > 1  # returning visitors from this run


def test_poisson_arrivals(products) -> None:
    rate = 40.0
    rng = random.Random(7)
    gaps = list(itertools.islice(traffic.poisson_gaps(rng, rate), 40_000))
    mean = statistics.fmean(gaps)
    assert abs(mean - 1 / rate) < 0.03 / rate
    assert abs(statistics.pstdev(gaps) / mean - 1.0) < 0.03  # exponential: coefficient of variation 1
    # counts per 1-second window: Poisson, so variance ~ mean ~ rate
    windows = Counter(int(t) for t in itertools.accumulate(gaps))
    counts = [windows.get(i, 0) for i in range(int(sum(gaps)) - 1)]
    assert abs(statistics.fmean(counts) - rate) < 0.05 * rate
    assert 0.85 < statistics.pvariance(counts) / statistics.fmean(counts) < 1.15
    # the schedule uses those arrivals: sessions end at start + arrival time
    plans = list(itertools.islice(traffic.schedule(products, seed=1, rate=rate, start_time=START), 400))
    assert all(b.at > a.at for a, b in itertools.pairwise(plans))
    assert abs(plans[-1].at / len(plans) - 1 / rate) < 0.2 / rate
    for plan in plans[:50]:
        last = parse_timestamp(plan.session.events[-1]["event_timestamp"])
        assert abs((last - START).total_seconds() - plan.at) < 0.002


def test_time_scale_stretches_the_simulated_clock(products) -> None:
    plans = list(
        itertools.islice(traffic.schedule(products, seed=2, rate=10, start_time=START, time_scale=3600), 20)
    )
    for plan in plans:
        last = parse_timestamp(plan.session.events[-1]["event_timestamp"])
        assert abs((last - START).total_seconds() - plan.at * 3600) < 0.01


def test_batches_respect_the_size() -> None:
    events = [{"n": i} for i in range(53)]
    chunks = list(traffic.batches(events, 25))
    assert [len(c) for c in chunks] == [25, 25, 3]
    assert [e for c in chunks for e in c] == events


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert traffic.percentile(values, 50) == 50.0
    assert traffic.percentile(values, 99) == 99.0
    assert traffic.percentile([], 99) == 0.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--url", "ftp://x", "--sessions", "1"], "http"),
        (["--url", "http://127.0.0.1:9/clickstream", "--rate", "0", "--sessions", "1"], "--rate"),
        (
            ["--url", "http://127.0.0.1:9/clickstream", "--batch-size", "501", "--sessions", "1"],
            "--batch-size",
        ),
        (["--url", "http://127.0.0.1:9/clickstream", "--backdate", "7d", "--sessions", "1"], "window"),
        (["--url", "http://127.0.0.1:9/clickstream", "--time-scale", "60", "--sessions", "1"], "--backdate"),
        (["--url", "http://127.0.0.1:9/clickstream", "--backdate", "soon", "--sessions", "1"], "duration"),
        (
            ["--url", "http://127.0.0.1:9/clickstream", "--checkout-rate", "2", "--sessions", "1"],
            "probability",
        ),
        (["--url", "http://127.0.0.1:9/clickstream", "--bot-share", "2", "--sessions", "1"], "bot_share"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        traffic.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_unreachable_api_is_a_failure_with_exit_1(capsys) -> None:
    # a port bound but not listening: every connection is refused at once
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/clickstream"
        code = traffic.main(
            ["--url", url, "--sessions", "3", "--rate", "500", "--json", "--progress", "never"]
        )
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert summary["failed_requests"] == summary["requests"] > 0
    assert summary["accepted_events"] == 0 and not summary["ok"]
    assert "ConnectionError" in summary["errors"][0]


def test_backdated_traffic_stays_in_the_window(products) -> None:
    now = datetime.now(UTC)
    config = traffic.RunConfig(url="http://127.0.0.1:9/c", sessions=1, backdate=timedelta(days=6))
    config.check()
    plans = traffic.schedule(products, seed=1, rate=5, start_time=now - config.backdate, time_scale=86400)
    for plan in itertools.islice(plans, 30):
        for event in plan.session.events:
            moment = parse_timestamp(event["event_timestamp"])
            assert now - traffic.DEFAULT_MAX_EVENT_AGE < moment


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_tty_aware() -> None:
    stats = traffic.Stats(sessions=5, requests=4)
    stats.events_by_name.update({"page_view": 12})
    tty, pipe, forced = _Tty(), io.StringIO(), io.StringIO()
    for stream, mode in ((tty, "auto"), (pipe, "auto"), (forced, "always")):
        bar = traffic.Progress(stream, mode, lambda: 0.5)
        bar.update(stats, 6.0)
        bar.update(stats, 6.05)  # too soon after the last one: not drawn again
        bar.update(stats, 7.0, final=True)
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
    assert "50.0% 5 sessions 12 events 4 requests" in tty.getvalue()
    assert pipe.getvalue() == ""  # not a terminal: no bar unless asked
    assert "\r" not in forced.getvalue() and forced.getvalue().count("\n") == 2


def test_partly_accepted_batch_counts_its_rejected_events() -> None:
    from sbw_ops.traffic_send import Stats

    stats = Stats()
    stats.record(10, 200, 0.01, "HTTP 200: 2 events rejected", "events/k.json", rejected=2)
    stats.record(5, 200, 0.01, "", "events/j.json")
    assert (stats.accepted_requests, stats.accepted_events, stats.rejected_events) == (2, 13, 2)
    assert stats.rejected_requests == 0 and stats.errors == ["HTTP 200: 2 events rejected"]


def test_generated_events_carry_unique_uuid7_ids_stable_for_a_seed() -> None:
    from sbw_ops import catalog, traffic

    products = catalog.load_csv()
    start = datetime(2026, 3, 1, tzinfo=UTC)

    def ids() -> list[str]:
        plans = itertools.islice(traffic.schedule(products, seed=5, rate=50.0, start_time=start), 30)
        return [e["event_id"] for plan in plans for e in plan.session.events]

    first = ids()
    assert first == ids() and len(set(first)) == len(first)
    assert all(i[14] == "7" for i in first)  # UUIDv7: re-sent requests carry the same ids
