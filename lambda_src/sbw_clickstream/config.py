"""Reading a Lambda function's settings from its environment: the one set of parsers both functions use.

`ingest_config` and `etl_config` describe their variables; the parsing and its error messages live here
once, so an integer, a choice or a bucket name is checked by the same rule in both functions. Every error
is a `ConfigError` whose message starts with the variable's name (`RAW_BUCKET: ...`), so a bad deployment
fails its first invocation with a message an operator can act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T", int, float)

# S3's naming rules for general purpose buckets: 3-63 characters of lower-case letters, digits, dots and
# hyphens, starting and ending with a letter or digit; no two adjacent dots, not an IPv4 address, not
# the reserved `xn--` prefix or `-s3alias` / `--ol-s3` suffixes.
_BUCKET_NAME = re.compile(
    r"^(?!xn--)(?!.*\.\.)(?!.*-s3alias$)(?!.*--ol-s3$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class ConfigError(ValueError):
    """Invalid or missing configuration; the message starts with the variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def optional(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value without surrounding blanks, or None when unset or empty."""
    value = env.get(name, "").strip()
    return value or None


def required(env: Mapping[str, str], name: str, expected: str | None = None) -> str:
    value = optional(env, name)
    if value is None:
        raise ConfigError(name, "is not set" + (f" (expected {expected})" if expected else ""))
    return value


def integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer in low..high; `default` when unset."""
    return _ranged(env, name, default, low, high, int, "an integer")


def number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A number in low..high; `default` when unset."""
    return _ranged(env, name, default, low, high, float, "a number")


def _ranged(env: Mapping[str, str], name: str, default: T, low: T, high: T, parse: type[T], kind: str) -> T:
    raw = optional(env, name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not {kind} (expected {low}..{high})") from None
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is outside {low}..{high}")
    return value


def choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = optional(env, name) or default
    if raw not in allowed:
        raise ConfigError(name, f"{raw!r} is not one of {', '.join(allowed)}")
    return raw


def matching(env: Mapping[str, str], name: str, pattern: re.Pattern[str], expected: str) -> str:
    """A required value that matches `pattern`; `expected` says what would (for the message)."""
    value = required(env, name, expected)
    if not pattern.match(value):
        raise ConfigError(name, f"{value!r} is not valid (expected {expected})")
    return value


def is_bucket_name(name: str) -> bool:
    return bool(_BUCKET_NAME.match(name)) and not _IPV4.match(name)


def bucket_name(env: Mapping[str, str], name: str = "RAW_BUCKET") -> str:
    """A required S3 bucket name, checked against S3's naming rules."""
    value = required(env, name, "an S3 bucket name such as clickstream-s3-ingest")
    if not is_bucket_name(value):
        raise ConfigError(
            name, f"{value!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)"
        )
    return value
