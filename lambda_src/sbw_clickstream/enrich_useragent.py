"""User-Agent header -> browser, OS, their major versions, device class and a bot flag (contract v1.1).

A pure function of the header (`classify_user_agent`), cached per distinct header: ingest calls it
once per request, and a shop's traffic repeats a few thousand user agents. The families come from
PyPI `ua-parser` with the `ua-parser-builtins` rules (uap-core regexes, loaded lazily so a cold
start compiles only the regexes a request tries), normalised by BROWSER_FAMILIES / OS_FAMILIES so
"Chrome Mobile" and "Chrome" are one browser (the device class says mobile). The rule tables are
documented in docs/architecture.md (user agent and bot rules); the tests are table-driven over real
user agents (tests/data/user_agents.tsv).

Bots: ua-parser's `Spider` device family, or a match of KNOWN_BOTS (crawlers, link previews,
monitoring, HTTP libraries and headless tools that are not browsers). A header-less request is not
a bot (device class `other`): browsers always send one, and a missing header says nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ua_parser import BasicResolver, Domain, Parser, load_lazy_builtins

MAX_FAMILY_CHARS = 64  # the stored-event contract's maxLength of ua_browser / ua_os
MAX_VERSION_CHARS = 16

# Browser families merged with their desktop form (the device class carries mobile/tablet).
BROWSER_FAMILIES: dict[str, str] = {
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome WebView",
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari WebView",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Opera Mobile": "Opera",
    "Other": "",
}
OS_FAMILIES: dict[str, str] = {"Mac OS X": "macOS", "Other": ""}

# Known bots beyond ua-parser's Spider family (case-insensitive search in the whole header).
# `(?<!cu)bot\b`: any "...bot" word except the CUBOT phone brand.
KNOWN_BOTS = re.compile(
    r"(?<!cu)bot\b|bot[/_-]|crawl|spider|slurp|scrap(?:er|y)|archiver|facebookexternalhit|"
    r"mediapartners-google|adsbot|feedfetcher|google-inspectiontool|chrome-lighthouse|pingdom|"
    r"uptimerobot|statuscake|site24x7|newrelicpinger|phantomjs|python-requests|python-urllib|"
    r"python-httpx|aiohttp|^curl/|^wget/|go-http-client|^java/|okhttp|apache-httpclient|"
    r"libwww-perl|node-fetch|^axios/|postmanruntime|httpie|whatsapp/|skypeuripreview|"
    r"embedly|ia_archiver|gptbot|chatgpt-user|claude-web|perplexity|bytespider|headlessshell",
    re.IGNORECASE,
)
# Device class, first match wins: consoles/TVs (_OTHER_DEVICES) -> other; _TABLET -> tablet;
# _MOBILE -> mobile; Android without "Mobile" -> tablet; another mobile OS -> mobile; a desktop OS
# -> desktop; anything else -> other. iPadOS 13+ sends a Mac header by default: desktop.
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook|sm-t\d|tab\b", re.IGNORECASE)
_MOBILE = re.compile(
    r"mobi|iphone|ipod|opera mini|windows phone|iemobile|kaios|blackberry|bb10", re.IGNORECASE
)
# Consoles, TVs and set-top boxes: device class "other".
_OTHER_DEVICES = re.compile(
    r"smart-?tv|xbox|playstation|nintendo|roku|appletv|crkey|bravia|hbbtv|web0s|netcast|aft[a-z]{1,3}\b",
    re.IGNORECASE,
)
DESKTOP_OS = frozenset(
    {"Windows", "macOS", "Linux", "Ubuntu", "Chrome OS", "ChromeOS", "Fedora", "Debian", "FreeBSD",
     "OpenBSD", "NetBSD", "Mandriva", "Red Hat", "SUSE", "Gentoo", "Slackware", "Kubuntu", "Mint"}
)  # fmt: skip
MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "KaiOS", "BlackBerry OS", "Symbian OS", "Tizen"})


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    """What ingest stores from a User-Agent header (the ua_*, device_class and is_bot fields)."""

    ua_browser: str | None = None
    ua_browser_version: str | None = None
    ua_os: str | None = None
    ua_os_version: str | None = None
    device_class: str = "other"
    is_bot: bool = False

    def fields(self) -> dict[str, str | bool | None]:
        """The stored-event fields, by name."""
        return {
            "ua_browser": self.ua_browser,
            "ua_browser_version": self.ua_browser_version,
            "ua_os": self.ua_os,
            "ua_os_version": self.ua_os_version,
            "device_class": self.device_class,
            "is_bot": self.is_bot,
        }


NO_USER_AGENT = UserAgentInfo()

# No ua-parser cache: lru_cache on classify_user_agent caches the whole (normalised) answer.
_PARSER = Parser(BasicResolver(load_lazy_builtins()))


def _name(family: str | None, table: dict[str, str]) -> str | None:
    if family is None:
        return None
    return table.get(family, family)[:MAX_FAMILY_CHARS] or None


def _version(major: str | None) -> str | None:
    return major[:MAX_VERSION_CHARS] if major else None


def _device_class(header: str, os_name: str | None) -> str:
    if _OTHER_DEVICES.search(header):
        return "other"
    if _TABLET.search(header):
        return "tablet"
    if _MOBILE.search(header):
        return "mobile"
    if os_name == "Android":  # an Android browser without "Mobile" is a tablet's (Google's guidance)
        return "tablet"
    if os_name in MOBILE_OS:
        return "mobile"
    if os_name in DESKTOP_OS:
        return "desktop"
    return "other"


@lru_cache(maxsize=4096)
def classify_user_agent(header: str | None) -> UserAgentInfo:
    """Browser, OS (families and major versions), device class and bot flag of a User-Agent header."""
    if not header or not header.strip():
        return NO_USER_AGENT
    result = _PARSER(header, Domain.ALL)
    agent, system, device = result.user_agent, result.os, result.device
    browser = _name(agent.family if agent else None, BROWSER_FAMILIES)
    os_name = _name(system.family if system else None, OS_FAMILIES)
    device_family = device.family if device else None
    is_bot = device_family == "Spider" or KNOWN_BOTS.search(header) is not None
    return UserAgentInfo(
        ua_browser=browser,
        ua_browser_version=_version(agent.major) if agent and browser else None,
        ua_os=os_name,
        ua_os_version=_version(system.major) if system and os_name else None,
        device_class="bot" if is_bot else _device_class(header, os_name),
        is_bot=is_bot,
    )
