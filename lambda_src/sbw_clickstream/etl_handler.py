"""Lambda entry point of SBW_Lamda_ETL: a thin handler over `etl.run_etl`.

Configuration is read and validated once per container; the database password (SSM
SecureString) is fetched once per container too. The handler logs the run's summary as one
structured JSON line (Powertools Logger, correlation id = the invocation's request id; service
name from the stack's POWERTOOLS_SERVICE_NAME) and returns it; a failure is logged and re-raised
so that the invocation is marked failed. Each run also writes its metrics (run status, objects
loaded and quarantined, lag) as one CloudWatch embedded-metric-format line (Powertools Metrics):
the alarms of cloudformation/etl.yaml watch them, no API call and no endpoint needed.

Invocations: the hourly schedule (any event), the catch-up schedule ({"trigger": "catch_up"}:
O(1) unless the last run stopped early or a backfill is open), a manual run ({"trigger":
"manual"}) or a backfill ({"from": ..., "to": ...}).

Locally: `python -m sbw_clickstream.etl_handler [--from DAY --to DAY]` runs one invocation with
the same environment variables (plus AWS_ENDPOINT_URL for the sandbox's moto server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg2
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from sbw_clickstream.etl import run_etl
from sbw_clickstream.etl_config import ConfigError, EtlConfig, resolve_password
from sbw_clickstream.keys import parse_event_key, uuid7_time

# Service name (log field and metric dimension): POWERTOOLS_SERVICE_NAME, set by the stack.
logger = Logger()
METRICS_NAMESPACE = "SBW/Clickstream"
# Run statuses, each counted as its own metric (Run<Status>) so that an alarm can watch one.
RUN_STATUSES = ("succeeded", "partial", "skipped", "failed", "idle")
TRIGGERS = ("manual", "catch_up")

_config: EtlConfig | None = None
_s3: Any = None


def _container_config() -> EtlConfig:
    global _config
    if _config is None:
        _config = EtlConfig.from_env(os.environ)
    return _config


def _s3_client(config: EtlConfig) -> Any:
    global _s3
    if _s3 is None:
        _s3 = boto3.client(
            "s3",
            region_name=config.region,
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=config.read_concurrency + 2,
                connect_timeout=5,
                read_timeout=30,
            ),
        )
    return _s3


def reset_container() -> None:
    """Forget the per-container state (tests simulate a new container)."""
    global _config, _s3
    _config, _s3 = None, None


def handler(event: Any, context: Any) -> dict[str, Any]:
    """EventBridge schedule (any event), or {"from": ..., "to": ...} for a backfill."""
    request_id = getattr(context, "aws_request_id", None) or f"local-{int(time.time() * 1000)}"
    logger.set_correlation_id(request_id)
    try:
        config = _container_config()
    except ConfigError as exc:
        logger.error("invalid configuration", extra={"variable": exc.variable, "error": str(exc)})
        raise
    password = resolve_password(config, lambda: boto3.client("ssm", region_name=config.region))

    def connect() -> Any:
        return psycopg2.connect(**config.dsn_kwargs(password))

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    asked = event.get("trigger") if isinstance(event, dict) else None
    trigger = asked if asked in TRIGGERS else "schedule"
    try:
        summary = run_etl(config, _s3_client(config), connect, event, remaining, trigger=trigger)
    except Exception as exc:
        logger.exception("ETL run failed", extra={"error": str(exc)})
        emit_metrics({"status": "failed"})
        raise
    clean = summary["status"] in ("succeeded", "idle") and not summary["objects_quarantined"]
    (logger.info if clean else logger.warning)("ETL run finished", extra={"summary": summary})
    emit_metrics(summary)
    return summary


def lag_seconds(summary: dict[str, Any], now: datetime) -> float | None:
    """How far behind the incremental load is: 0 when the run reached the end of the listing,
    else the age of the last key it committed (what waits is newer than that, up to now). None
    for runs that say nothing about it (backfill, skipped, idle, failed)."""
    if summary.get("mode") != "incremental" or summary.get("status") not in ("succeeded", "partial"):
        return None
    if summary["status"] == "succeeded":
        return 0.0
    parsed = parse_event_key(summary.get("watermark") or "")
    if parsed is None or parsed[1].version != 7:
        return None
    return max(0.0, (now - uuid7_time(parsed[1])).total_seconds())


def emit_metrics(summary: dict[str, Any], now: datetime | None = None) -> None:
    """One EMF line with the run's metrics (namespace POWERTOOLS_METRICS_NAMESPACE or
    SBW/Clickstream, dimension service = POWERTOOLS_SERVICE_NAME)."""
    metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE)
    status = summary.get("status", "failed")
    for name in RUN_STATUSES:  # zeros too: an alarm then sees data, not gaps, between bad runs
        metrics.add_metric(f"Run{name.title()}", MetricUnit.Count, 1 if status == name else 0)
    metrics.add_metric("ObjectsLoaded", MetricUnit.Count, summary.get("objects_loaded", 0))
    metrics.add_metric("ObjectsQuarantined", MetricUnit.Count, summary.get("objects_quarantined", 0))
    metrics.add_metric("RowsInserted", MetricUnit.Count, summary.get("rows_inserted", 0))
    if "duration_ms" in summary:
        metrics.add_metric("DurationSeconds", MetricUnit.Seconds, summary["duration_ms"] / 1000)
    lag = lag_seconds(summary, now or datetime.now(UTC))
    if lag is not None:
        metrics.add_metric("LagSeconds", MetricUnit.Seconds, lag)
    metrics.flush_metrics()


class _LocalContext:
    """Stands in for the Lambda context when running from the command line (15-minute budget)."""

    def __init__(self, budget_seconds: float) -> None:
        self.aws_request_id = f"local-{int(time.time() * 1000)}"
        self._deadline = time.monotonic() + budget_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run SBW_Lamda_ETL once with the environment's config.")
    parser.add_argument("--from", dest="start", help="backfill: first day (YYYY-MM-DD) or date-time")
    parser.add_argument("--to", dest="end", help="backfill: last day (YYYY-MM-DD) or date-time")
    parser.add_argument("--budget-seconds", type=float, default=900.0, help="simulated Lambda timeout")
    args = parser.parse_args(argv)
    event: dict[str, Any] = {"trigger": "manual"}
    if args.start or args.end:
        event.update({"from": args.start, "to": args.end})
    try:
        summary = handler(event, _LocalContext(args.budget_seconds))
    except Exception as exc:
        print(f"etl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary["status"] in ("succeeded", "skipped", "idle") else 3


if __name__ == "__main__":
    raise SystemExit(main())
