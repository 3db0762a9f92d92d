"""Referrer + campaign (utm_*, click id) -> referrer host, traffic source and channel group (contract v1.1).

A pure function of the event's page_referrer, page_url, utm_source, utm_medium and click_id_type
(`classify_traffic`), cached: the events of a session repeat the same few combinations. The rule
table (first match wins) is in docs/architecture.md (channel rules) and in CHANNEL_RULES' comments;
the tests are table-driven (tests/data/traffic_cases.tsv).

Hosts are compared lower-case without a leading "www."; a referrer whose host is the page's own host
is internal (an SPA route change or a link inside the shop), never a referral.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

MAX_HOST_CHARS = 255
MAX_SOURCE_CHARS = 256

# Known referrer domains: a host matches a domain when it is the domain or one of its subdomains.
# Kind "email" is checked before "search" (mail.google.com is not Google search).
KNOWN_DOMAINS: dict[str, tuple[str, str]] = {
    # webmail and mail apps
    "mail.google.com": ("gmail", "email"),
    "com.google.android.gm": ("gmail", "email"),  # android-app://com.google.android.gm
    "outlook.live.com": ("outlook", "email"),
    "outlook.office.com": ("outlook", "email"),
    "outlook.office365.com": ("outlook", "email"),
    "mail.yahoo.com": ("yahoo mail", "email"),
    "mail.aol.com": ("aol mail", "email"),
    "mail.proton.me": ("proton mail", "email"),
    "mail.zoho.com": ("zoho mail", "email"),
    "mail.yandex.ru": ("yandex mail", "email"),
    "mail.yandex.com": ("yandex mail", "email"),
    "webmail.gmx.net": ("gmx", "email"),
    "navigator-bs.gmx.com": ("gmx", "email"),
    # search engines (google.<any tld> and yandex.<tld> by SEARCH_TLD_ENGINES below)
    "bing.com": ("bing", "search"),
    "search.yahoo.com": ("yahoo", "search"),
    "search.yahoo.co.jp": ("yahoo", "search"),
    "duckduckgo.com": ("duckduckgo", "search"),
    "baidu.com": ("baidu", "search"),
    "m.baidu.com": ("baidu", "search"),
    "ecosia.org": ("ecosia", "search"),
    "search.brave.com": ("brave", "search"),
    "startpage.com": ("startpage", "search"),
    "search.naver.com": ("naver", "search"),
    "naver.com": ("naver", "search"),
    "seznam.cz": ("seznam", "search"),
    "ask.com": ("ask", "search"),
    "search.aol.com": ("aol", "search"),
    "qwant.com": ("qwant", "search"),
    "sogou.com": ("sogou", "search"),
    "so.com": ("360 search", "search"),
    "coccoc.com": ("coccoc", "search"),
    "com.google.android.googlequicksearchbox": ("google", "search"),
    # social networks
    "facebook.com": ("facebook", "social"),
    "fb.me": ("facebook", "social"),
    "messenger.com": ("facebook", "social"),
    "instagram.com": ("instagram", "social"),
    "t.co": ("twitter", "social"),
    "twitter.com": ("twitter", "social"),
    "x.com": ("twitter", "social"),
    "linkedin.com": ("linkedin", "social"),
    "lnkd.in": ("linkedin", "social"),
    "reddit.com": ("reddit", "social"),
    "youtube.com": ("youtube", "social"),
    "youtu.be": ("youtube", "social"),
    "tiktok.com": ("tiktok", "social"),
    "snapchat.com": ("snapchat", "social"),
    "threads.net": ("threads", "social"),
    "tumblr.com": ("tumblr", "social"),
    "vk.com": ("vk", "social"),
    "weibo.com": ("weibo", "social"),
    "quora.com": ("quora", "social"),
    "discord.com": ("discord", "social"),
    "t.me": ("telegram", "social"),
    "web.telegram.org": ("telegram", "social"),
    "wa.me": ("whatsapp", "social"),
    "web.whatsapp.com": ("whatsapp", "social"),
    "line.me": ("line", "social"),
    "xiaohongshu.com": ("xiaohongshu", "social"),
    "bsky.app": ("bluesky", "social"),
    "mastodon.social": ("mastodon", "social"),
    "com.facebook.katana": ("facebook", "social"),  # android-app://com.facebook.katana
    "com.instagram.android": ("instagram", "social"),
}
# Engines with a site per country: google.com, google.co.uk, google.com.sg, pinterest.de, ...
SEARCH_TLD_ENGINES = re.compile(r"(?:^|\.)(google|yandex)\.(?:com?\.)?[a-z]{2,3}$")
SOCIAL_TLD_NETWORKS = re.compile(r"(?:^|\.)(pinterest)\.(?:com?\.)?[a-z]{2,3}$")

# utm_medium values (lower-case) of each kind.
PAID_MEDIA = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "cpm", "cpv",
                        "paidsocial", "paid_social", "paid-social", "display", "banner"})  # fmt: skip
EMAIL_MEDIA = frozenset({"email", "e-mail", "e_mail", "e mail", "newsletter"})
SOCIAL_MEDIA = frozenset({"social", "social-network", "social_network", "social-media", "social_media", "sm"})
ORGANIC_MEDIA = frozenset({"organic"})
REFERRAL_MEDIA = frozenset({"referral", "link"})
# Click ids that mean a paid click, and the network (source) each one comes from. fbclid is NOT
# paid: Meta appends it to every outbound link, organic posts included.
CLICK_ID_SOURCES: dict[str, tuple[str, str]] = {
    "gclid": ("google", "search"),
    "gbraid": ("google", "search"),
    "wbraid": ("google", "search"),
    "dclid": ("google", "search"),
    "gclsrc": ("google", "search"),
    "msclkid": ("bing", "search"),
    "yclid": ("yandex", "search"),
    "ttclid": ("tiktok", "social"),
    "twclid": ("twitter", "social"),
    "li_fat_id": ("linkedin", "social"),
    "sccid": ("snapchat", "social"),
    "epik": ("pinterest", "social"),
    "rdt_cid": ("reddit", "social"),
}
ORGANIC_CLICK_IDS: dict[str, tuple[str, str]] = {
    "fbclid": ("facebook", "social"),
    "igshid": ("instagram", "social"),
}
# utm_source values (lower-case) that name a kind when no referrer says it: the known names
# (google, facebook, gmail, ...) and these patterns.
SOURCE_KINDS: dict[str, str] = {
    **{name: kind for name, kind in KNOWN_DOMAINS.values()},
    **{name: kind for name, kind in CLICK_ID_SOURCES.values()},
    "yandex": "search", "pinterest": "social", "ig": "social", "fb": "social", "meta": "social",
}  # fmt: skip
EMAIL_SOURCES = re.compile(r"e-?mail|newsletter|mailchimp|klaviyo|sendgrid|brevo|mailerlite")


@dataclass(frozen=True, slots=True)
class TrafficInfo:
    """What ingest stores about where a visit came from."""

    referrer_host: str | None = None
    traffic_source: str | None = None
    channel_group: str | None = None

    def fields(self) -> dict[str, str | None]:
        """The stored-event fields, by name."""
        return {
            "referrer_host": self.referrer_host,
            "traffic_source": self.traffic_source,
            "channel_group": self.channel_group,
        }


NO_CONTEXT = TrafficInfo()


def url_host(url: str | None) -> str | None:
    """Lower-case host of a URL (None when it has none or cannot be parsed)."""
    if not url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return host.rstrip(".")[:MAX_HOST_CHARS] or None if host else None


def _bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def known_source(host: str | None) -> tuple[str, str] | None:
    """(source name, kind: email/search/social) of a known referrer host, None for any other host."""
    if not host:
        return None
    host = _bare(host)
    labels = host.split(".")
    for start in range(len(labels) - 1):
        hit = KNOWN_DOMAINS.get(".".join(labels[start:]))
        if hit is not None:
            return hit
    engine = SEARCH_TLD_ENGINES.search(host)
    if engine:
        if host.startswith("mail.") or ".mail." in host:
            return (f"{engine.group(1)} mail", "email")
        return (engine.group(1), "search")
    network = SOCIAL_TLD_NETWORKS.search(host)
    if network:
        return (network.group(1), "social")
    return None


def classify_traffic(
    page_referrer: str | None,
    page_url: str | None,
    utm_source: str | None = None,
    utm_medium: str | None = None,
    click_id_type: str | None = None,
) -> TrafficInfo:
    """Referrer host, traffic source and channel group of an event (rules: module docstring)."""
    return _classify(page_referrer, page_url, utm_source, utm_medium, click_id_type)


@lru_cache(maxsize=8192)
def _classify(
    page_referrer: str | None,
    page_url: str | None,
    utm_source: str | None,
    utm_medium: str | None,
    click_id_type: str | None,
) -> TrafficInfo:
    referrer_host = url_host(page_referrer)
    tagged = bool(utm_source or utm_medium or click_id_type)
    if page_url is None and page_referrer is None and not tagged:
        return NO_CONTEXT  # a v1.0 client: no page context, nothing to say
    source = (utm_source or "").strip().lower()[:MAX_SOURCE_CHARS] or None
    medium = (utm_medium or "").strip().lower() or None
    known = known_source(referrer_host)
    by_source = known_source(source) if source and "." in source else None
    kind = (known or by_source or (None, None))[1]
    if kind is None and source:  # utm_source=google / facebook / newsletter
        kind = SOURCE_KINDS.get(source) or ("email" if EMAIL_SOURCES.search(source) else None)
    paid_click = CLICK_ID_SOURCES.get(click_id_type or "")
    organic_click = ORGANIC_CLICK_IDS.get(click_id_type or "")
    name = source or (known or paid_click or organic_click or (None,))[0]

    def result(channel: str) -> TrafficInfo:
        # the source: utm_source, else the known name, else the referrer's host, else (not set)
        return TrafficInfo(
            referrer_host, name or (_bare(referrer_host) if referrer_host else "(not set)"), channel
        )

    # 1. paid: a paid medium or a paid click id; search or social by the source, else search
    if medium in PAID_MEDIA or paid_click:
        paid_kind = kind or (paid_click[1] if paid_click else None)
        if medium in {"paidsocial", "paid_social", "paid-social"} or paid_kind == "social":
            return result("Paid Social")
        return result("Paid Search")
    # 2. email: an email medium, an email source, or a webmail referrer
    if medium in EMAIL_MEDIA or kind == "email":
        return result("Email")
    # 3. social: a social medium, a social network referrer/source, or fbclid
    if medium in SOCIAL_MEDIA or kind == "social" or organic_click:
        return result("Organic Social")
    # 4. organic search: a search engine referrer/source, or utm_medium=organic
    if medium in ORGANIC_MEDIA or kind == "search":
        return result("Organic Search")
    # 5. referral by tag: utm_medium=referral
    if medium in REFERRAL_MEDIA:
        return result("Referral")
    # 6. any other campaign tag
    if source or medium:
        return result("Campaign")
    page_host = url_host(page_url)
    # 7. internal: the referrer is the shop itself (www. ignored)
    if referrer_host and page_host and _bare(referrer_host) == _bare(page_host):
        return TrafficInfo(referrer_host, "(internal)", "Internal")
    # 8. referral: any other referrer with a host
    if referrer_host:
        return result("Referral")
    # 9. a referrer that is not a URL (about:blank, garbage): unassigned
    if page_referrer and page_referrer.strip():
        return TrafficInfo(None, "(not set)", "Unassigned")
    # 10. direct: no referrer, no tag
    return TrafficInfo(None, "(direct)", "Direct")


@lru_cache(maxsize=8192)
def _fields(
    page_referrer: str | None,
    page_url: str | None,
    utm_source: str | None,
    utm_medium: str | None,
    click_id_type: str | None,
) -> dict[str, str | None]:
    return _classify(page_referrer, page_url, utm_source, utm_medium, click_id_type).fields()


def traffic_fields(event: dict[str, Any]) -> dict[str, str | None]:
    """The traffic fields of one (client) event (all None for an event without any page or campaign
    context: a v1.0 client).

    The answer is shared between calls (cached): update a dict with it, never change it."""
    return _fields(
        event.get("page_referrer"),
        event.get("page_url"),
        event.get("utm_source"),
        event.get("utm_medium"),
        event.get("click_id_type"),
    )
