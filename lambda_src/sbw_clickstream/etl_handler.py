"""Lambda entry point of SBW_Lamda_ETL: a thin handler over `etl.run_etl`.

Configuration is read and validated once per container; the database password (SSM
SecureString) is fetched once per container too. The handler logs the run's summary as one
structured JSON line (Powertools Logger, correlation id = the invocation's request id) and returns
it; a failure is logged and re-raised so that the invocation is marked failed.

Locally: `python -m sbw_clickstream.etl_handler [--from DAY --to DAY]` runs one invocation with
the same environment variables (plus AWS_ENDPOINT_URL for the sandbox's moto server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import boto3
import psycopg2
from aws_lambda_powertools import Logger
from botocore.config import Config

from sbw_clickstream.etl import run_etl
from sbw_clickstream.etl_config import ConfigError, EtlConfig, resolve_password

logger = Logger(service="sbw-etl")

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
    trigger = "manual" if isinstance(event, dict) and event.get("trigger") == "manual" else "schedule"
    try:
        summary = run_etl(config, _s3_client(config), connect, event, remaining, trigger=trigger)
    except Exception as exc:
        logger.exception("ETL run failed", extra={"error": str(exc)})
        raise
    clean = summary["status"] == "succeeded" and not summary["objects_quarantined"]
    (logger.info if clean else logger.warning)("ETL run finished", extra={"summary": summary})
    return summary


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
    return 0 if summary["status"] in ("succeeded", "skipped") else 3


if __name__ == "__main__":
    raise SystemExit(main())
