"""The ETL stack's schedules and alarms against what the handler really emits (issue 14 §4).

The alarms watch metrics by name, namespace and dimension: a typo on either side would leave an
alarm that never fires. These tests read the template (cfn-lint's loader, as the template tests
do) and the EMF line the handler's `emit_metrics` prints, and compare them.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml
from sbw_clickstream import etl_handler
from sbw_clickstream.keys import event_key, uuid7

TEMPLATE = Path(__file__).resolve().parents[1] / "cloudformation" / "etl.yaml"


def _template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def _emf(capsys: pytest.CaptureFixture[str], summary: dict[str, Any], now: datetime) -> dict[str, Any]:
    etl_handler.emit_metrics(summary, now)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    return json.loads(line)


def test_a_partial_run_is_continued_within_minutes_by_the_catch_up_rule() -> None:
    resources = _template()["Resources"]
    params = _template()["Parameters"]
    assert params["CatchUpScheduleExpression"]["Default"] == "rate(5 minutes)"
    (target,) = resources["CatchUpRule"]["Properties"]["Targets"]
    assert json.loads(target["Input"]) == {"trigger": "catch_up"}
    assert target["Arn"] == {"Fn::GetAtt": ["Function", "Arn"]}
    permission = resources["CatchUpPermission"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": ["CatchUpRule", "Arn"]}
    assert "catch_up" in etl_handler.TRIGGERS


def test_every_alarm_watches_a_metric_the_handler_emits(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    template = _template()
    env = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == {"Ref": "FunctionName"}
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    namespace = template["Parameters"]["MetricsNamespace"]["Default"]
    service = template["Parameters"]["FunctionName"]["Default"]
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", namespace)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    now = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    behind = event_key(now - timedelta(hours=2), uuid7(int((now - timedelta(hours=2)).timestamp() * 1000)))
    partial = {
        "status": "partial",
        "mode": "incremental",
        "watermark": behind,
        "objects_quarantined": 2,
        "duration_ms": 840_500,
    }
    emf = _emf(capsys, partial, now)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == namespace and directive["Dimensions"] == [["service"]]
    assert emf["service"] == service
    emitted = {m["Name"] for m in directive["Metrics"]}
    assert emf["LagSeconds"] == [pytest.approx(7200, abs=1)]
    assert (emf["RunPartial"], emf["RunSkipped"], emf["ObjectsQuarantined"]) == ([1.0], [0.0], [2.0])
    assert emf["RunSucceeded"] == [0.0]  # the freshness alarm counts these
    assert emf["DurationSeconds"] == [840.5]  # how close a run comes to its 15-minute limit
    ours = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"]["Namespace"] == {"Ref": "MetricsNamespace"}
    }
    assert set(ours) == {"QuarantineAlarm", "SkippedRunsAlarm", "LagAlarm", "FreshnessAlarm"}
    for name, alarm in ours.items():
        assert alarm["MetricName"] in emitted, name
        assert alarm["Dimensions"] == [{"Name": "service", "Value": {"Ref": "FunctionName"}}], name
    # A run that reached the end of the listing is not behind; a skipped one says nothing of the lag.
    assert _emf(capsys, {"status": "succeeded", "mode": "incremental"}, now)["LagSeconds"] == [0.0]
    skipped = _emf(capsys, {"status": "skipped"}, now)
    assert "LagSeconds" not in skipped and skipped["RunSkipped"] == [1.0]


def test_the_logger_uses_the_stacks_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "SBW_Lamda_ETL_test")
    try:
        assert importlib.reload(etl_handler).logger.service == "SBW_Lamda_ETL_test"
    finally:
        monkeypatch.delenv("POWERTOOLS_SERVICE_NAME")
        importlib.reload(etl_handler)
