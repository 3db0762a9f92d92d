"""Synthetic shoppers' v1.1 context: pages, referrers, traffic sources, user agents and bots, classified
by ingest's own enrichment functions (the channel groups and bot flags the dashboard will show)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sbw_clickstream.contract import validate_event
from sbw_clickstream.enrich_traffic import traffic_fields
from sbw_clickstream.enrich_useragent import classify_user_agent
from sbw_clickstream.ingest_enrich import RequestContext, enrich_event
from sbw_ops import catalog, traffic
from sbw_ops.traffic_context import SOURCES

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CONTEXT_FIELDS = ("page_url", "page_path", "page_title", "page_referrer", "screen", "viewport", "locale",
                  "client_timezone")  # fmt: skip


@pytest.fixture(scope="module")
def products() -> list[catalog.Product]:
    return catalog.load_csv()


@pytest.fixture(scope="module")
def generated(products) -> list[traffic.Session]:
    plans = traffic.schedule(products, seed=21, rate=20.0, start_time=START)
    return [plan.session for plan in itertools.islice(plans, 3000)]


def test_every_event_carries_valid_page_and_browser_context(generated) -> None:
    paths: Counter[str] = Counter()
    for session in generated:
        for event in session.events:
            assert validate_event(event) == [], event
            for name in CONTEXT_FIELDS:
                if name == "page_referrer":
                    continue  # none on a direct or email landing
                assert event.get(name), (name, event)
            assert urlsplit(event["page_url"]).path == event["page_path"]
            paths[event["page_path"].split("/")[1] or "/"] += 1
    # home, category, product, search results, cart and checkout pages all occur
    assert set(paths) >= {"/", "category", "products", "search", "cart", "checkout"}


def test_referrer_is_the_previous_page_and_tags_are_on_the_landing_page_only(generated) -> None:
    for session in generated:
        landing = session.events[0]
        previous_url, current_url = None, landing["page_url"]
        for event in session.events:
            if event["page_url"] != current_url or (
                event["event_name"] == "page_view" and event is not landing
            ):
                previous_url, current_url = current_url, event["page_url"]
            if previous_url is None:  # still on the landing page
                assert event.get("page_referrer") == landing.get("page_referrer")
                assert event.get("utm_source") == landing.get("utm_source")
            else:
                assert event["page_referrer"] == previous_url
                assert urlsplit(event["page_referrer"]).hostname == "shop.example"
                assert not any(k.startswith("utm_") or k == "click_id_type" for k in event), event


def test_every_channel_group_of_the_sources_appears_when_ingest_classifies(generated) -> None:
    channels: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for session in generated:
        landing = traffic_fields(session.events[0])
        channels[landing["channel_group"]] += 1
        sources[landing["traffic_source"]] += 1
        for event in session.events[1:]:
            fields = traffic_fields(event)
            if event["page_url"] != session.events[0]["page_url"]:
                assert fields["channel_group"] == "Internal", event
    assert set(channels) == {
        "Direct",
        "Organic Search",
        "Paid Search",
        "Organic Social",
        "Paid Social",
        "Email",
        "Referral",
        "Campaign",
    }
    assert {
        "google",
        "bing",
        "duckduckgo",
        "facebook",
        "instagram",
        "twitter",
        "reddit",
        "newsletter",
    } <= set(sources)
    # the mix follows the configured weights (direct 24 %, organic+paid google ~35 %)
    assert 0.19 < channels["Direct"] / len(generated) < 0.29
    assert channels["Paid Search"] / len(generated) == pytest.approx(
        sum(s.weight for s in SOURCES if s.name == "google-ads"), abs=0.03
    )


def test_bot_share_is_near_the_configured_one_by_ingest_rules(generated) -> None:
    devices: Counter[str] = Counter()
    bot_events = events = 0
    for session in generated:
        info = classify_user_agent(session.user_agent)
        devices[info.device_class] += 1
        events += len(session.events)
        bot_events += len(session.events) if info.is_bot else 0
        # what ingest stores for the event is the classification of the header sent
        ctx = RequestContext("2026-01-05T09:00:00Z", session.user_agent, None,
                             agent_fields=info.fields())  # fmt: skip
        assert enrich_event(session.events[0], ctx)["is_bot"] is info.is_bot
    assert set(devices) == {"desktop", "mobile", "tablet", "bot"}
    assert devices["bot"] / len(generated) == pytest.approx(traffic.Profile().bot_share, abs=0.012)
    assert bot_events / events == pytest.approx(traffic.Profile().bot_share, abs=0.015)
    assert devices["mobile"] > devices["desktop"] > devices["tablet"]


def test_bot_share_follows_the_profile(products) -> None:
    profile = traffic.Profile(bot_share=0.2)
    plans = traffic.schedule(products, seed=5, rate=20.0, start_time=START, profile=profile)
    agents = [plan.session.user_agent for plan in itertools.islice(plans, 1500)]
    share = sum(classify_user_agent(a).is_bot for a in agents) / len(agents)
    assert share == pytest.approx(0.2, abs=0.04)
    with pytest.raises(ValueError, match="bot_share"):
        traffic.Profile(bot_share=1.5)


def test_returning_visitor_keeps_client_id_user_agent_and_browser(products) -> None:
    # a simulated clock 300 times faster than the arrivals: ~10 hours, so visitors come back
    plans = traffic.schedule(products, seed=21, rate=20.0, start_time=START, time_scale=300)
    seen: dict[str, tuple] = {}
    returning = 0
    for session in (plan.session for plan in itertools.islice(plans, 3000)):
        event = session.events[0]
        browser = (
            session.user_agent,
            event["screen"],
            event["viewport"],
            event["locale"],
            event["client_timezone"],
        )
        if session.client_id in seen:
            returning += 1
            assert not session.first_visit
            assert seen[session.client_id] == browser
        seen[session.client_id] = browser
        assert all(e["client_id"] == session.client_id for e in session.events)
    assert returning > 100  # the run does bring visitors back


def test_same_seed_same_context_other_seed_other_context(products) -> None:
    def run(seed: int) -> list[tuple[str, list[dict]]]:
        plans = traffic.schedule(products, seed=seed, rate=5, start_time=START)
        return [(p.session.user_agent, p.session.events) for p in itertools.islice(plans, 300)]

    first, again, other = run(9), run(9), run(10)
    assert first == again
    assert [ua for ua, _ in first] != [ua for ua, _ in other]
    assert [e[0]["page_url"] for _, e in first] != [e[0]["page_url"] for _, e in other]


def test_pages_visited_follow_the_catalog(products, generated) -> None:
    paths = {p.url_path for p in products}
    categories = {f"/category/{catalog.slugify(p.category)}" for p in products}
    by_kind: defaultdict[str, set[str]] = defaultdict(set)
    for session in generated:
        for event in session.events:
            by_kind[event["page_path"].split("/")[1]].add(event["page_path"])
            if "context_product_id" in event and event["event_name"] in ("page_view", "product_view"):
                assert event["page_path"] == event["context_product_url_path"]
    assert by_kind["products"] <= paths
    assert by_kind["category"] == categories


def test_bot_share_option_reaches_the_profile() -> None:
    args = traffic.build_parser().parse_args(["--url", "http://127.0.0.1:9/c", "--bot-share", "0.25"])
    assert traffic.config_from_args(args).profile.bot_share == 0.25
