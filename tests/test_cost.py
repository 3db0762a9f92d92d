"""The cost model (sbw_ops.cost): a few items worked by hand; the table in docs/aws.md is its output."""

from __future__ import annotations

from pathlib import Path

import pytest
from sbw_ops import cost

REPO = Path(__file__).resolve().parents[1]


def test_month_is_730_hours() -> None:
    assert cost.SECONDS_PER_MONTH == 730 * 3600 == 2_628_000


def test_s3_puts_are_one_per_request_whatever_the_batch() -> None:
    for batch in (1, 20):
        item = cost.estimate(10, batch).item("S3 PUT (one object per request)")
        # 10 req/s x 2,628,000 s = 26,280,000 PUTs x 0.005 USD / 1,000
        assert item.usd == pytest.approx(131.40)


def test_http_api_tiers_above_300_million() -> None:
    item = cost.estimate(1000, 1).item("API Gateway HTTP API")
    # 2,628 M requests: 300 M at 1.20 + 2,328 M at 1.08
    assert item.usd == pytest.approx(300 * 1.20 + 2328 * 1.08)
    assert cost.estimate(10, 1).item("API Gateway HTTP API").usd == pytest.approx(26.28 * 1.20)


def test_fixed_items() -> None:
    e = cost.estimate(100, 20)
    assert e.item("EC2 (t3.small webdb + t3.medium dwh)").usd == pytest.approx(730 * (0.0264 + 0.0528))
    # Issue 16: the roots hold the system only; PostgreSQL is on its own volumes, snapshotted on replace.
    assert e.item("EBS gp3 root volumes").usd == pytest.approx(2 * 10 * 0.096)
    assert e.item("EBS gp3 PostgreSQL data volumes").usd == pytest.approx(60 * 0.096)
    assert e.item("EBS snapshots of the data volumes (left by a replace or delete)").usd == pytest.approx(
        60 * 0.05
    )
    # Four endpoints since the disk metric: monitoring joined ssm, ssmmessages and ec2messages.
    assert e.item("Interface endpoints (ssm, ssmmessages, ec2messages, monitoring)").usd == pytest.approx(
        4 * 730 * 0.013 + 0.02
    )
    # Issue 16 §2: pgBackRest's repositories, four copies of both data volumes (60 GB) compressed 3:1, at
    # S3 Standard's price: 80 GB.
    backups = e.item("S3 backups (pgBackRest, both clusters)")
    assert backups.usd == pytest.approx(4 * 60 / 3 * 0.025) == pytest.approx(2.0)
    assert backups.quantity == "4 x 20 GB"
    assert e.item("Public IPv4 (webdb Elastic IP)").usd == pytest.approx(3.65)
    assert e.item("EventBridge schedules").usd == 0
    # Issue 16: every alarm of the templates (19 alarm metrics: the two API rate alarms read two metrics
    # each; the two disk alarms one each), the alerts topic, the parameters' key (1 USD + requests).
    assert e.item("CloudWatch alarms").usd == pytest.approx(19 * 0.10)
    # Two disk metrics (one path per host) at 0.30, one PutMetricData per host every 5 minutes.
    assert e.item("CloudWatch disk metrics (roles/host_metrics)").usd == pytest.approx(
        2 * 0.30 + 2 * 730 * 12 / 1000 * 0.01
    )
    assert e.item("KMS key of the /sbw/* parameters").usd == pytest.approx(
        1.0 + (730 * 12 + 200) / 1e4 * 0.03
    )
    assert e.item("SNS alarm topic (e-mail)").usd == pytest.approx(200 / 1e6 * 0.5 + 200 / 1e5 * 2.0)


def test_lambda_ingest_requests_plus_gb_seconds() -> None:
    item = cost.estimate(10, 1).item("Lambda ingest")
    requests = 26.28e6
    gb_seconds = requests * (20.0 + 0.05) / 1000 * 0.25
    assert item.usd == pytest.approx(requests / 1e6 * 0.20 + gb_seconds * 0.0000166667)


def test_storage_scales_with_events_and_total_is_the_sum() -> None:
    one, twenty = cost.estimate(100, 1), cost.estimate(100, 20)
    storage = "S3 storage (each month's new data)"
    assert twenty.item(storage).usd == pytest.approx(20 * one.item(storage).usd)
    assert one.total == pytest.approx(sum(i.usd for i in one.items))
    # Batching is the lever per event: 20 events per PUT make each event ~19x cheaper here.
    assert (one.total / one.events_per_month) / (twenty.total / twenty.events_per_month) > 15


def test_etl_duration_flags_the_lambda_limit() -> None:
    assert cost.estimate(10, 20).etl_run_seconds < cost.ETL_TIMEOUT_S
    assert cost.estimate(1000, 1).etl_run_seconds > cost.ETL_TIMEOUT_S
    flagged = cost.render([cost.estimate(1000, 1)])
    assert f"over the deployed timeout of {cost.ETL_TIMEOUT_S} s" in flagged and "falls behind" in flagged


def test_the_model_uses_the_deployed_timeout_and_counts_the_catch_up_rule() -> None:
    # One source: the ETL stack's parameter defaults (issue 14: the model assumed 900 s, the stack 300 s).
    text = (REPO / "cloudformation" / "etl.yaml").read_text()
    assert (
        f'Default: "{cost.ETL_TIMEOUT_S}"' in text.split("  TimeoutSeconds:")[1].split("\n  MemorySize:")[0]
    )
    assert cost.ETL_TIMEOUT_S == 300 and cost.ETL_CATCH_UP_MINUTES == 5
    e = cost.estimate(10, 1)
    assert e.item("Lambda ETL catch-up (idle: one query)").quantity.startswith("8,030 runs")  # 11 per hour
    assert 0 < e.item("Lambda ETL catch-up (idle: one query)").usd < 0.1


def test_every_price_names_its_source() -> None:
    for key, price in cost.PRICES.items():
        assert price.source.startswith("aws.amazon.com/"), key
        assert price.unit, key


def test_cli_prints_six_scenarios_and_the_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n  total") == 6
    assert "1000 req/s: 532 + 1,014 = 1,546 USD" in out


def test_docs_table_is_the_models_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost.main(["--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in (REPO / "docs" / "aws.md").read_text()


def test_what_a_teardown_keeps_costs_by_kind() -> None:
    # A final snapshot bills per GB-month, a kept bucket (raw, assets, the pgBackRest backups) S3 storage, a
    # kept key 1 USD; parameters and an idle user pool nothing (sbw_ops.teardown reports these).
    assert cost.kept_monthly_usd("snapshot", 60) == pytest.approx(60 * 0.05)
    assert cost.kept_monthly_usd("bucket", 10) == pytest.approx(10 * 0.025)
    # The model's backup repositories, kept by a teardown, cost what the running platform pays for them.
    a = cost.Assumptions()
    backup_gb = a.backup_copies * (a.webdb_volume_gb + a.dwh_volume_gb) / a.backup_compression
    assert cost.kept_monthly_usd("bucket", backup_gb) == pytest.approx(
        cost.estimate(10, 1).item("S3 backups (pgBackRest, both clusters)").usd
    )
    assert cost.kept_monthly_usd("kms_key", 1) == pytest.approx(1.0)
    assert cost.kept_monthly_usd("parameter", 4) == 0
    assert cost.kept_monthly_usd("user_pool", 1) == 0
    with pytest.raises(ValueError, match="unknown kept item 'volume'"):
        cost.kept_monthly_usd("volume", 1)


def test_volume_sizes_are_the_templates() -> None:
    """The sizes priced are the hosts stack's: roots fixed, data volumes the parameters' defaults."""
    from tests.cfn_support import default, props

    a = cost.Assumptions()
    for host in ("WebDb", "Dwh"):
        (root,) = props("hosts", f"{host}Instance")["BlockDeviceMappings"]
        assert root["Ebs"]["VolumeSize"] == a.root_volume_gb
    assert int(default("hosts", "WebDbVolumeGiB")) == a.webdb_volume_gb
    assert int(default("hosts", "DwhVolumeGiB")) == a.dwh_volume_gb
