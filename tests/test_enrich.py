"""Ingest enrichment of contract v1.1, table-driven: User-Agent -> browser/OS/device class/bot flag
(tests/data/user_agents.tsv) and referrer + UTM + click id -> referrer host/source/channel group
(tests/data/traffic_cases.tsv). Both are pure functions; their rule tables are in docs/architecture.md."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from sbw_clickstream import contract
from sbw_clickstream.enrich_traffic import classify_traffic, known_source, traffic_fields, url_host
from sbw_clickstream.enrich_useragent import KNOWN_BOTS, NO_USER_AGENT, classify_user_agent

DATA = Path(__file__).parent / "data"


def _table(name: str) -> list[dict[str, str | None]]:
    lines = [
        line for line in (DATA / name).read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = [{k: (v or None) for k, v in row.items()} for row in reader]
    assert all(None not in row for row in rows), f"{name}: a row has more columns than the header"
    return rows


USER_AGENTS = _table("user_agents.tsv")
TRAFFIC = _table("traffic_cases.tsv")


def test_the_tables_are_large_and_cover_every_class() -> None:
    assert len(USER_AGENTS) >= 100 and len(TRAFFIC) >= 100
    assert {row["user_agent"] for row in USER_AGENTS}.__len__() == len(USER_AGENTS)  # no duplicate rows
    assert {row["device_class"] for row in USER_AGENTS} == set(contract.DEVICE_CLASSES)
    assert {row["channel_group"] for row in TRAFFIC} == {*contract.CHANNEL_GROUPS, None}


@pytest.mark.parametrize("row", USER_AGENTS, ids=lambda row: (row["user_agent"] or "")[:60])
def test_user_agent_table(row: dict[str, Any]) -> None:
    info = classify_user_agent(row["user_agent"])
    expected = {**row, "is_bot": row["is_bot"] == "true"}
    del expected["user_agent"]
    assert info.fields() == expected


@pytest.mark.parametrize(
    "row",
    TRAFFIC,
    ids=lambda row: f"{row['page_referrer']}|{row['utm_source']}|{row['utm_medium']}|{row['click_id_type']}",
)
def test_traffic_table(row: dict[str, Any]) -> None:
    event = {k: row[k] for k in ("page_referrer", "page_url", "utm_source", "utm_medium", "click_id_type")}
    info = classify_traffic(**event)
    assert info.fields() == {k: row[k] for k in ("referrer_host", "traffic_source", "channel_group")}
    assert traffic_fields(event) == info.fields()


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_user_agent_is_other_and_not_a_bot(header: str | None) -> None:
    assert classify_user_agent(header) is NO_USER_AGENT
    assert NO_USER_AGENT.fields() == {
        "ua_browser": None,
        "ua_browser_version": None,
        "ua_os": None,
        "ua_os_version": None,
        "device_class": "other",
        "is_bot": False,
    }


def test_every_bot_of_the_table_is_flagged_by_the_parser_or_the_known_list() -> None:
    bots = [row["user_agent"] for row in USER_AGENTS if row["is_bot"] == "true"]
    humans = [row["user_agent"] for row in USER_AGENTS if row["is_bot"] == "false"]
    assert len(bots) >= 40 and len(humans) >= 80
    assert not [ua for ua in humans if KNOWN_BOTS.search(ua or "")]  # the list flags no browser of the table
    assert all(classify_user_agent(ua).device_class == "bot" for ua in bots)


def test_values_fit_the_stored_contract() -> None:
    long = "Mozilla/5.0 (Windows NT 10.0) " + "X" * 600 + "/123456789012345678901234567890"
    fields = classify_user_agent(long).fields()
    for name, value in fields.items():
        limit = contract.ENRICHMENT_PROPERTIES[name].get("maxLength")
        if limit and value is not None:
            assert len(value) <= limit, name


def test_hosts_are_lower_case_without_port_and_bad_urls_have_none() -> None:
    assert url_host("HTTPS://WWW.Google.COM:443/search?q=x") == "www.google.com"
    assert url_host("https://shop.example./") == "shop.example"
    assert url_host("http://[::1") is None  # unbalanced IPv6 literal: urlsplit raises
    assert url_host("") is None and url_host(None) is None and url_host("/relative/path") is None


def test_known_sources_match_subdomains_not_lookalikes() -> None:
    assert known_source("l.facebook.com") == ("facebook", "social")
    assert known_source("www.google.com.sg") == ("google", "search")
    assert known_source("mail.google.com") == ("gmail", "email")
    assert known_source("notfacebook.com") is None
    assert known_source("facebook.com.evil.test") is None
    assert known_source("googleusercontent.example") is None


def test_a_v1_0_event_gets_null_traffic_fields() -> None:
    assert (
        traffic_fields({"event_name": "page_view"})
        == classify_traffic(None, None).fields()
        == {
            "referrer_host": None,
            "traffic_source": None,
            "channel_group": None,
        }
    )
