"""Monthly AWS cost of the platform in ap-southeast-1, item by item, at a given request rate and batch size.

    python -m sbw_ops.cost                    # the table for 10 / 100 / 1,000 requests/s, batches 1 and 20
    python -m sbw_ops.cost --rate 50 --batch 5
    python -m sbw_ops.cost --markdown         # the table in docs/aws.md

A request is one POST /clickstream carrying `batch` events; ingest writes one S3 object per request
(one PUT), the ETL reads each object once per hourly run. A month is 730 hours (AWS's convention).

Unit prices: the public on-demand prices of Asia Pacific (Singapore), ap-southeast-1, transcribed on
2026-11-25 from the AWS pricing pages as known to the author (aws.amazon.com/<service>/pricing; the AWS
Price List API gives the same figures: `aws pricing get-products --region us-east-1 --service-code ...`).
They were not re-fetched here (this machine has no access to AWS): check them before quoting. Free tiers
and Savings Plans are ignored; taxes excluded. Each price names its source page.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

HOURS_PER_MONTH = 730
CFN_DIR = Path(__file__).resolve().parents[2] / "cloudformation"
ETL_TEMPLATE = CFN_DIR / "etl.yaml"


def _etl_parameter_default(name: str) -> str:
    """Default of one parameter of cloudformation/etl.yaml: the model costs what is deployed."""
    text = ETL_TEMPLATE.read_text()
    match = re.search(rf"^  {name}:\n(?:    .*\n)*?    Default: \"?([^\"\n]+)\"?$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"{ETL_TEMPLATE}: parameter {name} has no Default")
    return match.group(1)


def _rate_minutes(expression: str) -> int:
    """Minutes between two runs of an EventBridge `rate(N unit)` expression."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours)\)", expression.strip())
    if match is None:
        raise ValueError(f"{ETL_TEMPLATE}: {expression!r} is not a rate(N minutes|hours) expression")
    return int(match.group(1)) * (60 if match.group(2).startswith("hour") else 1)


def _alarm_metrics() -> int:
    """Billed alarm metrics of the templates: one per plain alarm, one per MetricStat of a metric-math
    alarm (the expression itself is free), so the model counts what is deployed."""
    total = 0
    for template in sorted(CFN_DIR.glob("*.yaml")):
        text = template.read_text()
        alarms = text.count("Type: AWS::CloudWatch::Alarm")
        math_alarms = len(re.findall(r"^      Metrics:$", text, re.MULTILINE))
        total += alarms - math_alarms + text.count("MetricStat:")
    return total


# The ETL function's deployed timeout and catch-up interval (cloudformation/etl.yaml).
ETL_TIMEOUT_S = int(_etl_parameter_default("TimeoutSeconds"))
ETL_CATCH_UP_MINUTES = _rate_minutes(_etl_parameter_default("CatchUpScheduleExpression"))
# ETL seconds one hour holds when every run stops at its deadline margin (ETL_DEADLINE_MARGIN_SECONDS,
# 20 s) and the next starts at the following catch-up tick.
ETL_SECONDS_PER_HOUR = (
    3600
    * (ETL_TIMEOUT_S - 20)
    / (math.ceil(ETL_TIMEOUT_S / (ETL_CATCH_UP_MINUTES * 60)) * ETL_CATCH_UP_MINUTES * 60)
)
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
GB = 1024**3


@dataclass(frozen=True)
class Price:
    """One unit price in USD with where it comes from."""

    usd: float
    unit: str
    source: str


PRICES_DATE = "2026-11-25 (transcribed; AWS public prices for ap-southeast-1 as known, not re-fetched)"
PRICES: dict[str, Price] = {
    "http_api_first_300m": Price(
        1.20, "per million requests (first 300 M/month)", "aws.amazon.com/api-gateway/pricing"
    ),
    "http_api_over_300m": Price(
        1.08, "per million requests (over 300 M/month)", "aws.amazon.com/api-gateway/pricing"
    ),
    "lambda_request": Price(0.20, "per million invocations", "aws.amazon.com/lambda/pricing"),
    "lambda_gb_second": Price(0.0000166667, "per GB-second (x86_64)", "aws.amazon.com/lambda/pricing"),
    "s3_put": Price(0.005, "per 1,000 PUT/COPY/POST/LIST requests", "aws.amazon.com/s3/pricing"),
    "s3_get": Price(0.0004, "per 1,000 GET requests", "aws.amazon.com/s3/pricing"),
    "s3_storage": Price(0.025, "per GB-month, S3 Standard (first 50 TB)", "aws.amazon.com/s3/pricing"),
    "eventbridge_schedule": Price(
        0.0, "scheduled rule invocations (no charge)", "aws.amazon.com/eventbridge/pricing"
    ),
    "ec2_t3_small": Price(
        0.0264, "per hour, t3.small Linux on-demand", "aws.amazon.com/ec2/pricing/on-demand"
    ),
    "ec2_t3_medium": Price(
        0.0528, "per hour, t3.medium Linux on-demand", "aws.amazon.com/ec2/pricing/on-demand"
    ),
    "ebs_gp3": Price(
        0.096, "per GB-month, gp3 (3,000 IOPS / 125 MB/s included)", "aws.amazon.com/ebs/pricing"
    ),
    "public_ipv4": Price(0.005, "per hour per public IPv4 address", "aws.amazon.com/vpc/pricing"),
    "interface_endpoint_hour": Price(
        0.013, "per hour per endpoint per AZ", "aws.amazon.com/privatelink/pricing"
    ),
    "interface_endpoint_gb": Price(0.01, "per GB processed", "aws.amazon.com/privatelink/pricing"),
    "logs_ingest": Price(0.70, "per GB ingested (standard class)", "aws.amazon.com/cloudwatch/pricing"),
    "logs_storage": Price(0.033, "per GB-month archived", "aws.amazon.com/cloudwatch/pricing"),
    "alarm": Price(
        0.10, "per standard-resolution alarm metric per month", "aws.amazon.com/cloudwatch/pricing"
    ),
    "custom_metric": Price(
        0.30, "per custom metric per month (first 10,000)", "aws.amazon.com/cloudwatch/pricing"
    ),
    "put_metric_data": Price(0.01, "per 1,000 PutMetricData requests", "aws.amazon.com/cloudwatch/pricing"),
    "sns_publish": Price(0.50, "per million publishes", "aws.amazon.com/sns/pricing"),
    "sns_email": Price(2.00, "per 100,000 e-mail notifications", "aws.amazon.com/sns/pricing"),
    "kms_key": Price(1.00, "per customer-managed key per month", "aws.amazon.com/kms/pricing"),
    "kms_request": Price(0.03, "per 10,000 symmetric requests", "aws.amazon.com/kms/pricing"),
    "ebs_snapshot": Price(0.05, "per GB-month, EBS snapshot (standard tier)", "aws.amazon.com/ebs/pricing"),
    "ssm_parameter_standard": Price(
        0.0, "per standard-tier parameter per month (no charge)", "aws.amazon.com/systems-manager/pricing"
    ),
    "cognito_idle_pool": Price(
        0.0,
        "per user pool with no monthly active users (billing is per MAU)",
        "aws.amazon.com/cognito/pricing",
    ),
    "data_out": Price(
        0.12, "per GB to the internet (first 10 TB/month)", "aws.amazon.com/ec2/pricing/on-demand"
    ),
}


@dataclass(frozen=True)
class Assumptions:
    """What the workload looks like besides rate and batch (each a measured or stated estimate)."""

    event_bytes: int = 700  # one enriched event as stored (NDJSON line), contract's fields + enrichment
    response_bytes: int = 350  # ingest's 200 answer plus headers, to the browser
    ingest_memory_gb: float = 0.25  # MemorySize 256 in cloudformation/ingest.yaml
    ingest_ms_base: float = 20.0  # one S3 PUT in-region dominates (~15 ms) + handler
    ingest_ms_per_event: float = 0.05  # validation + enrichment (~20k events/s on one core)
    etl_memory_gb: float = 0.5  # MemorySize 512 in cloudformation/etl.yaml
    etl_runs: int = HOURS_PER_MONTH  # SBW_ETL_HOURLY_RULE rate(1 hour)
    etl_s_base: float = 2.0  # connect, watermark, bookkeeping per run
    etl_objects_per_s: float = 400.0  # concurrent GETs of small objects through the gateway endpoint
    etl_rows_per_s: float = 77_000.0  # staged COPY + ON CONFLICT measured on 2 cores (DESIGN.md)
    # Catch-up invocations (CatchUpRule) that find nothing pending: connect + lock + one query.
    etl_catch_up_runs: int = HOURS_PER_MONTH * (60 // ETL_CATCH_UP_MINUTES - 1)
    etl_catch_up_idle_s: float = 0.3
    log_bytes_per_request: int = 900  # Lambda START/END/REPORT (~260) + one JSON log line + access log
    log_retention_months: float = 1.0  # RetentionInDays 30
    # cloudformation/hosts.yaml: each root volume (fixed), the PostgreSQL data volumes (WebDbVolumeGiB,
    # DwhVolumeGiB defaults) and, kept after a replace or delete (DeletionPolicy/UpdateReplacePolicy:
    # Snapshot), one snapshot of each data volume (upper bound: its size; a snapshot bills used blocks).
    root_volume_gb: int = 10
    webdb_volume_gb: int = 20
    dwh_volume_gb: int = 40
    data_volume_snapshots: int = 1
    # pgBackRest's repositories in the storage stack's backup bucket (S3 Standard), both clusters. An upper
    # bound like the snapshots': each full backup is its data volume full, compressed 3:1 (pgBackRest's
    # compression on row data; 60 GB of volumes -> 20 GB per full of both); four such copies are stored:
    # two full backups (repo1-retention-full=2, assumed), the differentials and WAL between them (about one
    # full's worth), and the full pgBackRest last expired, kept as noncurrent versions for
    # BackupRetentionDays (35 days). Requests (WAL segment and backup file PUTs, a few thousand a month at
    # these write rates) are cents and not counted.
    backup_compression: float = 3.0
    backup_copies: float = 4.0
    endpoints: int = 4  # ssm, ssmmessages, ec2messages, monitoring (the disk metric) in one AZ
    endpoint_gb_per_month: float = 2.0  # SSM sessions, agent traffic, ETL's parameter reads
    # Every alarm of the templates (hosts: status checks; ingest: 5xx/4xx rates, errors, throttles; etl).
    alarm_metrics: int = field(default_factory=_alarm_metrics)
    # roles/host_metrics: disk_used_percent of one path per host (InstanceId x path = one metric each),
    # one PutMetricData every 5 minutes per host.
    host_metrics: int = 2
    host_metric_requests: int = 2 * HOURS_PER_MONTH * 12
    alarm_notifications: int = 200  # alarm + OK messages a month, e-mailed (a noisy month)
    # Decrypts of the /sbw/* key: one per ETL invocation (its password) plus the playbooks' reads.
    kms_requests: int = HOURS_PER_MONTH * (60 // ETL_CATCH_UP_MINUTES) + 200


@dataclass(frozen=True)
class Item:
    name: str
    quantity: str
    usd: float


@dataclass(frozen=True)
class Estimate:
    rate: float
    batch: int
    items: tuple[Item, ...]
    etl_run_seconds: float = field(default=0.0)

    @property
    def total(self) -> float:
        return sum(i.usd for i in self.items)

    def item(self, name: str) -> Item:
        return next(i for i in self.items if i.name == name)

    @property
    def events_per_month(self) -> float:
        return self.rate * self.batch * SECONDS_PER_MONTH


def _p(key: str) -> float:
    return PRICES[key].usd


def http_api_cost(requests: float) -> float:
    """Tiered HTTP API price: the first 300 M requests of the month, then the rest."""
    first = min(requests, 300e6)
    return first / 1e6 * _p("http_api_first_300m") + max(requests - 300e6, 0) / 1e6 * _p("http_api_over_300m")


def estimate(rate: float, batch: int, a: Assumptions | None = None) -> Estimate:
    """The monthly bill at `rate` requests/s of `batch` events each."""
    a = a or Assumptions()
    requests = rate * SECONDS_PER_MONTH
    events = requests * batch
    data_gb = events * a.event_bytes / GB
    ingest_gb_s = requests * (a.ingest_ms_base + a.ingest_ms_per_event * batch) / 1000 * a.ingest_memory_gb
    objects_per_run = requests / a.etl_runs
    etl_run_s = (
        a.etl_s_base + objects_per_run / a.etl_objects_per_s + objects_per_run * batch / a.etl_rows_per_s
    )
    etl_gb_s = a.etl_runs * etl_run_s * a.etl_memory_gb
    list_requests = a.etl_runs * (1 + math.ceil(objects_per_run / 1000))
    log_gb = requests * a.log_bytes_per_request / GB
    items = (
        Item("API Gateway HTTP API", f"{requests / 1e6:,.1f} M requests", http_api_cost(requests)),
        Item(
            "Lambda ingest",
            f"{requests / 1e6:,.1f} M invocations, {ingest_gb_s:,.0f} GB-s",
            requests / 1e6 * _p("lambda_request") + ingest_gb_s * _p("lambda_gb_second"),
        ),
        Item(
            "S3 PUT (one object per request)", f"{requests / 1e6:,.1f} M PUTs", requests / 1000 * _p("s3_put")
        ),
        Item(
            "S3 GET + LIST (ETL reads each object once)",
            f"{requests / 1e6:,.1f} M GETs, {list_requests:,} LISTs",
            requests / 1000 * _p("s3_get") + list_requests / 1000 * _p("s3_put"),
        ),
        Item("S3 storage (each month's new data)", f"{data_gb:,.1f} GB", data_gb * _p("s3_storage")),
        Item(
            "Lambda ETL (hourly)",
            f"{a.etl_runs} runs x {etl_run_s:,.0f} s",
            a.etl_runs / 1e6 * _p("lambda_request") + etl_gb_s * _p("lambda_gb_second"),
        ),
        Item(
            "Lambda ETL catch-up (idle: one query)",
            f"{a.etl_catch_up_runs:,} runs x {a.etl_catch_up_idle_s} s",
            a.etl_catch_up_runs / 1e6 * _p("lambda_request")
            + a.etl_catch_up_runs * a.etl_catch_up_idle_s * a.etl_memory_gb * _p("lambda_gb_second"),
        ),
        Item(
            "EventBridge schedules",
            f"{a.etl_runs + a.etl_catch_up_runs:,} invocations",
            (a.etl_runs + a.etl_catch_up_runs) * _p("eventbridge_schedule"),
        ),
        Item(
            "EC2 (t3.small webdb + t3.medium dwh)",
            f"2 x {HOURS_PER_MONTH} h",
            HOURS_PER_MONTH * (_p("ec2_t3_small") + _p("ec2_t3_medium")),
        ),
        Item("EBS gp3 root volumes", f"2 x {a.root_volume_gb} GB", 2 * a.root_volume_gb * _p("ebs_gp3")),
        Item(
            "EBS gp3 PostgreSQL data volumes",
            f"{a.webdb_volume_gb + a.dwh_volume_gb} GB",
            (a.webdb_volume_gb + a.dwh_volume_gb) * _p("ebs_gp3"),
        ),
        Item(
            "EBS snapshots of the data volumes (left by a replace or delete)",
            f"{a.data_volume_snapshots} x {a.webdb_volume_gb + a.dwh_volume_gb} GB",
            a.data_volume_snapshots * (a.webdb_volume_gb + a.dwh_volume_gb) * _p("ebs_snapshot"),
        ),
        Item(
            "S3 backups (pgBackRest, both clusters)",
            f"{a.backup_copies:g} x {(a.webdb_volume_gb + a.dwh_volume_gb) / a.backup_compression:,.0f} GB",
            a.backup_copies * (a.webdb_volume_gb + a.dwh_volume_gb) / a.backup_compression * _p("s3_storage"),
        ),
        Item("Public IPv4 (webdb Elastic IP)", f"{HOURS_PER_MONTH} h", HOURS_PER_MONTH * _p("public_ipv4")),
        Item(
            "Interface endpoints (ssm, ssmmessages, ec2messages, monitoring)",
            f"{a.endpoints} x {HOURS_PER_MONTH} h",
            a.endpoints * HOURS_PER_MONTH * _p("interface_endpoint_hour")
            + a.endpoint_gb_per_month * _p("interface_endpoint_gb"),
        ),
        Item(
            "CloudWatch Logs (Lambda + access logs)",
            f"{log_gb:,.1f} GB",
            log_gb * _p("logs_ingest") + log_gb * a.log_retention_months * _p("logs_storage"),
        ),
        Item("CloudWatch alarms", f"{a.alarm_metrics} alarm metrics", a.alarm_metrics * _p("alarm")),
        Item(
            "CloudWatch disk metrics (roles/host_metrics)",
            f"{a.host_metrics} metrics, {a.host_metric_requests:,} PutMetricData",
            a.host_metrics * _p("custom_metric") + a.host_metric_requests / 1000 * _p("put_metric_data"),
        ),
        Item(
            "SNS alarm topic (e-mail)",
            f"{a.alarm_notifications} notifications",
            a.alarm_notifications / 1e6 * _p("sns_publish") + a.alarm_notifications / 1e5 * _p("sns_email"),
        ),
        Item(
            "KMS key of the /sbw/* parameters",
            f"1 key, {a.kms_requests:,} requests",
            _p("kms_key") + a.kms_requests / 1e4 * _p("kms_request"),
        ),
        Item(
            "Data transfer out (API responses)",
            f"{requests * a.response_bytes / GB:,.1f} GB",
            requests * a.response_bytes / GB * _p("data_out"),
        ),
    )
    return Estimate(rate, batch, items, etl_run_s)


# What playbooks/teardown.yml keeps by default, per unit of `amount` (sbw_ops.teardown reports each).
KEPT_PRICES = {
    "bucket": "s3_storage",  # GiB of every version (raw, assets and the pgBackRest backup bucket)
    "snapshot": "ebs_snapshot",  # GiB (the volume's size: an upper bound, snapshots bill used blocks)
    "kms_key": "kms_key",  # keys (requests: none while nothing runs)
    "parameter": "ssm_parameter_standard",  # parameters
    "user_pool": "cognito_idle_pool",  # pools (no one logs in once the shop is down)
}


def kept_monthly_usd(kind: str, amount: float) -> float:
    """Monthly cost of something a teardown kept: `amount` in the unit of KEPT_PRICES[kind]."""
    if kind not in KEPT_PRICES:
        raise ValueError(f"unknown kept item {kind!r}: one of {', '.join(sorted(KEPT_PRICES))}")
    return amount * _p(KEPT_PRICES[kind])


# AWS's "Clickstream Analytics on AWS" solution, published monthly estimates (us-east-1), for comparison:
# ingestion to S3 and hourly data processing at 10 / 100 / 1,000 requests/s.
AWS_SOLUTION = {10: (132.0, 96.0), 100: (168.0, 142.0), 1000: (532.0, 1014.0)}


def render(estimates: list[Estimate]) -> str:
    lines = []
    for e in estimates:
        events = e.events_per_month / 1e6
        lines.append(f"\n{e.rate:,.0f} requests/s x {e.batch} event(s) = {events:,.0f} M events/month")
        for item in e.items:
            lines.append(f"  {item.name:<52} {item.quantity:>36}  {item.usd:>10,.2f} USD")
        lines.append(f"  {'total':<52} {'':>36}  {e.total:>10,.2f} USD")
        lines.append(f"  {'per million events':<52} {'':>36}  {e.total / events:>10,.2f} USD")
        if e.etl_run_seconds > ETL_TIMEOUT_S:
            lines.append(
                f"  ! an hour of traffic needs ~{e.etl_run_seconds:,.0f} s of ETL, over the deployed timeout"
                f" of {ETL_TIMEOUT_S} s: catch-up runs continue it; beyond"
                f" {ETL_SECONDS_PER_HOUR:,.0f} s per hour (back-to-back runs) it falls behind:"
                " batch on the client or fan out"
            )
    return "\n".join(lines)


def render_markdown(estimates: list[Estimate]) -> str:
    rates = sorted({e.rate for e in estimates})
    batches = sorted({e.batch for e in estimates})
    by = {(e.rate, e.batch): e for e in estimates}
    header = "| item | " + " | ".join(f"{r:,.0f} req/s x {b}" for r in rates for b in batches) + " |"
    rows = [header, "| --- |" + " ---: |" * (len(rates) * len(batches))]
    for index, item in enumerate(estimates[0].items):
        cells = [f"{by[(r, b)].items[index].usd:,.2f}" for r in rates for b in batches]
        rows.append(f"| {item.name} | " + " | ".join(cells) + " |")
    rows.append(
        "| **total (USD/month)** | "
        + " | ".join(f"**{by[(r, b)].total:,.0f}**" for r in rates for b in batches)
        + " |"
    )
    per_million = [
        f"{by[(r, b)].total / (by[(r, b)].events_per_month / 1e6):,.2f}" for r in rates for b in batches
    ]
    rows.append("| per million events | " + " | ".join(per_million) + " |")
    solution = [
        f"{sum(AWS_SOLUTION[int(r)]):,.0f}" if int(r) in AWS_SOLUTION else "" for r in rates for b in batches
    ]
    rows.append(
        "| AWS clickstream solution (ingest + hourly processing, us-east-1) | " + " | ".join(solution) + " |"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, action="append", help="requests per second (repeatable)")
    parser.add_argument("--batch", type=int, action="append", help="events per request (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the table of docs/aws.md")
    args = parser.parse_args(argv)
    rates = args.rate or [10.0, 100.0, 1000.0]
    batches = args.batch or [1, 20]
    estimates = [estimate(r, b) for r in rates for b in batches]
    if args.markdown:
        print(render_markdown(estimates))
        return 0
    print(f"Monthly AWS cost, ap-southeast-1, {HOURS_PER_MONTH} h/month. Prices: {PRICES_DATE}.")
    print(render(estimates))
    print("\nAWS's clickstream solution (us-east-1, published): ingestion to S3 + hourly processing")
    for rate, (ingest, processing) in AWS_SOLUTION.items():
        ours = [f"batch {b}: {estimate(rate, b).total:,.0f}" for b in batches]
        theirs = f"{ingest:,.0f} + {processing:,.0f} = {ingest + processing:,.0f} USD"
        print(f"  {rate:>5} req/s: {theirs}  |  this platform: " + ", ".join(ours) + " USD")
    print("\nUnit prices:")
    for key, price in PRICES.items():
        print(f"  {key:<24} {price.usd:>12g} USD {price.unit}  ({price.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
