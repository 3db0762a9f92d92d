"""Synthetic shoppers' browsers and pages: user agents, device and locale, traffic sources, page context.

What contract v1.1 lets a tracker send beside the event (page_url/path/title, page_referrer, utm_*,
click_id_type, screen, viewport, locale, client_timezone) and the User-Agent header ingest enriches,
for the simulated visitors of `traffic_simulate`. A visitor's browser (user agent, screen, locale,
time zone) is fixed when the visitor is first seen, so a returning visitor keeps it; a session's
traffic source (search engine, social network, newsletter, paid click, referring site, direct) sets
the referrer and UTM tags of its landing page only, and every later page's referrer is the page
before it, as a browser reports it. Pure functions of the RNG they are given: deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

from sbw_ops.catalog import Product, slugify

SHOP_ORIGIN = "https://shop.example"  # the shop's own origin: its pages refer to each other (Internal)
SITE_NAME = "SBW Shop"

# Real browsers' User-Agent headers by device class, with their share of human visitors.
DESKTOP_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
)
MOBILE_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
)
TABLET_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
)
BOT_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)",
)
DEVICE_SHARES: tuple[tuple[str, float], ...] = (("desktop", 0.4), ("mobile", 0.5), ("tablet", 0.1))
AGENTS_BY_DEVICE: dict[str, tuple[str, ...]] = {
    "desktop": DESKTOP_AGENTS,
    "mobile": MOBILE_AGENTS,
    "tablet": TABLET_AGENTS,
    "bot": BOT_AGENTS,
}
SCREENS: dict[str, tuple[tuple[str, str], ...]] = {  # (screen, viewport) in CSS pixels
    "desktop": (("1920x1080", "1903x969"), ("2560x1440", "1280x1307"), ("1536x864", "1519x730")),
    "mobile": (("390x844", "390x664"), ("412x915", "412x791"), ("360x800", "360x680")),
    "tablet": (("820x1180", "820x1106"), ("1280x800", "1280x696")),
    "bot": (("1024x768", "1024x768"),),
}
# Time zones and locales of the visitors, per UTC offset (minutes) of traffic_simulate.UTC_OFFSETS.
ZONES: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {
    8 * 60: (("Asia/Singapore", ("en-SG", "zh-SG")), ("Asia/Kuala_Lumpur", ("en-MY", "ms-MY")),
             ("Asia/Manila", ("en-PH",))),
    7 * 60: (("Asia/Bangkok", ("th-TH", "en-US")), ("Asia/Jakarta", ("id-ID",)),
             ("Asia/Ho_Chi_Minh", ("vi-VN",))),
    9 * 60: (("Asia/Tokyo", ("ja-JP",)), ("Asia/Seoul", ("ko-KR",))),
    5 * 60 + 30: (("Asia/Kolkata", ("en-IN", "hi-IN")),),
}  # fmt: skip


def weighted_at(draw: float, pairs: Sequence[tuple[Any, float]]) -> Any:
    """The value whose weight band holds `draw` (uniform in 0..1) when the bands fill 0..1 in order."""
    point = draw * sum(w for _, w in pairs)
    for value, weight in pairs:
        point -= weight
        if point < 0:
            return value
    return pairs[-1][0]


def user_agent_for(draw: float, bot_share: float, rng: random.Random) -> tuple[str, str]:
    """(device class, User-Agent) of a new visitor: a bot with probability `bot_share` (by `draw`,
    uniform in 0..1), else desktop/mobile/tablet by DEVICE_SHARES; the string itself from `rng`."""
    human = (draw - bot_share) / (1.0 - bot_share) if bot_share < 1.0 else 0.0
    device = "bot" if draw < bot_share else weighted_at(human, DEVICE_SHARES)
    agents = AGENTS_BY_DEVICE[device]
    return device, agents[int(rng.random() * len(agents))]


@dataclass(frozen=True, slots=True)
class Browser:
    """What a visitor's browser reports with every event (contract v1.1) and its User-Agent header."""

    user_agent: str
    device: str  # desktop / mobile / tablet / bot (what the generator meant; ingest decides by itself)
    screen: str
    viewport: str
    locale: str
    client_timezone: str

    def fields(self) -> dict[str, str]:
        return {
            "screen": self.screen,
            "viewport": self.viewport,
            "locale": self.locale,
            "client_timezone": self.client_timezone,
        }


def browser_for(device: str, user_agent: str, utc_offset_minutes: int, rng: random.Random) -> Browser:
    """The visitor's screen, viewport, locale and time zone (consistent with its UTC offset)."""
    screen, viewport = SCREENS[device][int(rng.random() * len(SCREENS[device]))]
    zones = ZONES.get(utc_offset_minutes) or (("Etc/UTC", ("en-US",)),)
    zone, locales = zones[int(rng.random() * len(zones))]
    return Browser(user_agent, device, screen, viewport, locales[int(rng.random() * len(locales))], zone)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a session comes from: its landing page's referrer, UTM tags and click-id flag."""

    name: str
    weight: float
    referrer: str | None = None
    utm: tuple[tuple[str, str], ...] = ()
    click_id_type: str | None = None


# The mix of traffic sources (weights sum to 1). Expected channel groups by ingest's rules: search
# engines Organic Search, social networks Organic Social (fbclid is organic), newsletter Email,
# cpc + gclid Paid Search, paid_social Paid Social, affiliate tags Campaign, other sites Referral,
# no referrer Direct; every later page in a session refers to the shop itself (Internal).
SOURCES: tuple[Source, ...] = (
    Source("direct", 0.24),
    Source("google", 0.22, "https://www.google.com/"),
    Source("google.com.sg", 0.04, "https://www.google.com.sg/"),
    Source("bing", 0.04, "https://www.bing.com/"),
    Source("duckduckgo", 0.02, "https://duckduckgo.com/"),
    Source("facebook", 0.06, "https://l.facebook.com/", click_id_type="fbclid"),
    Source("instagram", 0.05, "https://l.instagram.com/"),
    Source("t.co", 0.02, "https://t.co/"),
    Source("reddit", 0.02, "https://www.reddit.com/r/singapore/"),
    Source("newsletter", 0.08, None, (("utm_source", "newsletter"), ("utm_medium", "email"),
                                      ("utm_campaign", "weekly-deals"), ("utm_content", "hero"))),
    Source("google-ads", 0.09, "https://www.google.com/", (("utm_source", "google"), ("utm_medium", "cpc"),
                                                           ("utm_campaign", "brand-search")), "gclid"),
    Source("facebook-ads", 0.03, "https://m.facebook.com/", (("utm_source", "facebook"),
                                                             ("utm_medium", "paid_social"),
                                                             ("utm_campaign", "retargeting"))),
    Source("affiliate", 0.02, "https://deals.partner.example/", (("utm_source", "partner-network"),
                                                                 ("utm_medium", "affiliate"),
                                                                 ("utm_campaign", "cashback"))),
    Source("hardwarezone", 0.03, "https://forums.hardwarezone.com.sg/threads/best-earbuds.7012/"),
    Source("review-blog", 0.04, "https://www.techradar.com/best/best-wireless-earbuds"),
)  # fmt: skip


def pick_source(rng: random.Random) -> Source:
    return weighted_at(rng.random(), [(source, source.weight) for source in SOURCES])


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the shop: its path, the query of its URL and its title."""

    path: str
    title: str
    query: str = ""

    @staticmethod
    def home() -> Page:
        return Page("/", f"{SITE_NAME} - Online shopping")

    @staticmethod
    def category(name: str) -> Page:
        return Page(f"/category/{slugify(name)}", f"{name} | {SITE_NAME}")

    @staticmethod
    def product(product: Product) -> Page:
        return Page(product.url_path, f"{product.name} | {SITE_NAME}")

    @staticmethod
    def search(term: str) -> Page:
        return Page("/search", f"Search results for '{term}' | {SITE_NAME}", f"q={quote_plus(term)}")

    @staticmethod
    def cart() -> Page:
        return Page("/cart", f"Your cart | {SITE_NAME}")

    @staticmethod
    def checkout() -> Page:
        return Page("/checkout", f"Checkout | {SITE_NAME}")

    def url(self, extra_query: str = "") -> str:
        query = "&".join(q for q in (self.query, extra_query) if q)
        return f"{SHOP_ORIGIN}{self.path}" + (f"?{query}" if query else "")


def page_context(pages: Sequence[Page | None], source: Source) -> list[dict[str, Any]]:
    """The page fields of each event, given the page each event is on (None: the page before).

    The landing page carries the source's referrer and UTM tags (in its URL too, as the tracker
    sees them; the click id itself is never sent, only which one it was); each later page's
    referrer is the URL of the page before it."""
    out: list[dict[str, Any]] = []
    landing_query = urlencode(source.utm)
    current: Page | None = None
    current_url = referrer = None
    landing = True
    for page in pages:
        if page is not None and page is not current:  # each page view is a navigation
            if current is not None:
                referrer, landing = current_url, False
            current = page
            current_url = page.url(landing_query if landing else "")
        if current is None:
            raise ValueError("a session's first event must be on a page")
        fields: dict[str, Any] = {
            "page_url": current_url,
            "page_path": current.path,
            "page_title": current.title,
            "page_referrer": source.referrer if landing else referrer,
        }
        if landing:
            fields.update(dict(source.utm))
            if source.click_id_type:
                fields["click_id_type"] = source.click_id_type
        out.append(fields)
    return out
