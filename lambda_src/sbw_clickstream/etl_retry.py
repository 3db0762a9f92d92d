"""Retries with exponential backoff and jitter, for S3 and database calls of the ETL."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

T = TypeVar("T")

# S3 error codes that retrying cannot fix.
_PERMANENT_S3_CODES = frozenset(
    {
        "NoSuchKey",
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidObjectState",
        "404",
        "403",
    }
)
# Permanent errors that concern one object, not the run (wrong bucket or credentials fail the run):
# e.g. AccessDenied on one KMS-encrypted object, an archived (Glacier) object.
OBJECT_S3_CODES = frozenset({"NoSuchKey", "404", "AccessDenied", "403", "InvalidObjectState"})


class EtlError(RuntimeError):
    """The run cannot continue (retries exhausted, lock lost...); nothing partial was committed."""


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` retries after the first try; delay base * 2**n (capped) with full jitter."""

    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    # Seconds left before the run must stop (the Lambda deadline minus its margin); None: no
    # deadline. A retry that would sleep past it is not made: the error is raised at once.
    time_left: Callable[[], float] | None = None

    def delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.cap_seconds, self.base_seconds * 2**attempt)


def s3_error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def is_transient_s3_error(exc: BaseException) -> bool:
    """Throttling, 5xx, timeouts and connection errors are worth retrying; 4xx like NoSuchKey are not."""
    if isinstance(exc, ClientError):
        return s3_error_code(exc) not in _PERMANENT_S3_CODES
    return isinstance(exc, BotoCoreError | ConnectionError | TimeoutError)


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool] = is_transient_s3_error,
) -> T:
    """Call `fn`; retry transient errors with backoff; then raise EtlError naming `what`."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt >= policy.attempts:
                raise EtlError(f"{what} failed after {attempt + 1} attempts: {exc}") from exc
            delay = policy.delay(attempt)
            if policy.time_left is not None and delay >= policy.time_left():
                raise EtlError(
                    f"{what} failed after {attempt + 1} attempts, no time left before the deadline: {exc}"
                ) from exc
            policy.sleep(delay)
            attempt += 1
