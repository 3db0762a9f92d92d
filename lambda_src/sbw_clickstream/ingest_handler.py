"""clickstream-lambda-ingest: the Lambda entry point, `sbw_clickstream.ingest_handler.handler`.

A thin adapter for API Gateway HTTP API payload format 2.0: Powertools' resolver
(`ingest.http_surface`: routing, CORS) over the plain functions of `sbw_clickstream.ingest`.
Configuration (`ingest_config`) is read and validated once per container: at import inside Lambda
(a bad variable fails the init phase with a message naming it), on the first call elsewhere (tests,
the local API). The S3 client is created once, outside the logic, and passed in; boto3 is imported
only then, which keeps this module's cold import small. Logs are structured JSON (Powertools
Logger), one line per request, with the API Gateway request id as correlation id.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from sbw_clickstream.ingest import FailedRecordBudget, HttpSurface, IngestOutcome, IngestRequest, http_surface
from sbw_clickstream.ingest_config import IngestConfig, load_config

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "clickstream-lambda-ingest"))


@dataclass(slots=True)
class Runtime:
    """What one container keeps between invocations (the HTTP surface once per thread, the failed/
    budget once per container)."""

    config: IngestConfig
    s3: Any
    local: threading.local = field(default_factory=threading.local)
    budget: FailedRecordBudget | None = None

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = FailedRecordBudget(self.config.failed_records_per_minute)

    def surface(self) -> HttpSurface:
        surface = getattr(self.local, "surface", None)
        if surface is None:
            surface = self.local.surface = http_surface(self.config, self.s3, self.budget)
        return surface


METRICS_NAMESPACE = "SBW/Clickstream"


def emit_failed_record_metrics(outcome: IngestOutcome) -> None:
    """FailedRecordsWritten / FailedRecordsDropped as one EMF line, only for a request that wanted a
    failed/ record (the accepted path writes none, so it costs nothing there)."""
    metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE)
    metrics.add_metric("FailedRecordsWritten", MetricUnit.Count, 1 if outcome.failed_key else 0)
    metrics.add_metric("FailedRecordsDropped", MetricUnit.Count, 1 if outcome.failed_record_dropped else 0)
    metrics.flush_metrics()


_config: IngestConfig | None = None
_runtime: Runtime | None = None


# The S3 client's budget: its worst case (every attempt timing out, plus the standard mode's backoff
# before each retry, random up to 2**(n-1) s) must end well inside the function's timeout
# (cloudformation/ingest.yaml, `Timeout`), so that the handler is still alive to answer 503 instead
# of API Gateway answering a bare 500/504. A PUT of at most 1 MiB to S3 in the same region takes
# tens of milliseconds; 2 s of read timeout is generous.
S3_CONNECT_TIMEOUT_SECONDS = 1
S3_READ_TIMEOUT_SECONDS = 2
S3_TOTAL_ATTEMPTS = 2
# Time the handler needs after the last S3 attempt to log and answer.
ANSWER_MARGIN_SECONDS = 2


def s3_worst_case_seconds() -> float:
    """Longest one S3 call of this client can take: attempts x (connect + read) + backoffs."""
    per_attempt = S3_CONNECT_TIMEOUT_SECONDS + S3_READ_TIMEOUT_SECONDS
    backoffs = sum(2 ** (n - 1) for n in range(1, S3_TOTAL_ATTEMPTS))
    return S3_TOTAL_ATTEMPTS * per_attempt + backoffs


def make_s3_client(config: IngestConfig) -> Any:
    """The S3 client of this container (boto3 imported here, not at module import)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=config.region,
        endpoint_url=config.s3_endpoint_url,
        config=Config(
            retries={"total_max_attempts": S3_TOTAL_ATTEMPTS, "mode": "standard"},
            connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
            read_timeout=S3_READ_TIMEOUT_SECONDS,
        ),
    )


def configure(env: Mapping[str, str] | None = None, s3: Any = None) -> Runtime:
    """(Re)build the container state from `env` (default os.environ); `s3` replaces the client."""
    return configure_with(load_config(os.environ if env is None else env), s3)


def runtime() -> Runtime:
    """The container state, built on first use."""
    if _runtime is not None:
        return _runtime
    if _config is not None:
        return configure_with(_config)
    return configure()


def configure_with(config: IngestConfig, s3: Any = None) -> Runtime:
    """Use an already validated configuration (and optionally a given client)."""
    global _config, _runtime
    _config = config
    _runtime = Runtime(config, s3 if s3 is not None else make_s3_client(config))
    return _runtime


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) event in, HTTP response out."""
    request = IngestRequest.from_apigw_v2(event)
    logger.set_correlation_id(request.request_id)
    response, outcome = runtime().surface().resolve(event, context)
    status = outcome.response.status
    fields: dict[str, Any] = {
        "status": status,
        "method": request.method,
        "path": request.path,
        "events": outcome.events,
    }
    if outcome.event_key:
        fields["key"] = outcome.event_key
    if outcome.failed_key:
        fields["failed_key"] = outcome.failed_key
    if outcome.failed_key or outcome.failed_record_dropped:
        fields["failed_record_dropped"] = outcome.failed_record_dropped
        emit_failed_record_metrics(outcome)
    body = outcome.response.body or {}
    if "error" in body:
        fields["error"] = body["error"]
    if "violations" in body:  # a 4xx, or a 200 whose batch had rejected events
        fields["violations"] = len(body["violations"])
    if outcome.storage_error:
        logger.error("events not stored: S3 write failed", extra={**fields, "cause": outcome.storage_error})
    elif outcome.failed_record_error:
        logger.warning(
            "request rejected; its failed record could not be written",
            extra={**fields, "cause": outcome.failed_record_error},
        )
    else:
        logger.info("request accepted" if status < 300 else "request rejected", extra=fields)
    return response


# The Handler setting of the function (cloudformation/ingest.yaml); lambda_handler is the same function.
handler = lambda_handler

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # inside Lambda: fail the init phase on bad config
    _config = load_config(os.environ)
