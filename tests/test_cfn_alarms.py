"""The alarms of every stack: each notifies the alerts topic and watches a metric that exists.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

from typing import Any

from tests.cfn_support import (
    REPO,
    STACKS,
    plain,
    props,
    resources,
    stack_tasks,
    template,
)

# Metrics AWS publishes by itself, per namespace (the ones the alarms may watch).
AWS_METRICS = {
    "AWS/Lambda": {"Errors", "Throttles", "Invocations", "Duration"},
    "AWS/EC2": {"StatusCheckFailed_System", "StatusCheckFailed_Instance", "StatusCheckFailed"},
    "AWS/ApiGateway": {"4xx", "5xx", "Count", "Latency", "IntegrationLatency"},
    "AWS/SQS": {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"},
}


def _alarms() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (name, lid): plain(r["Properties"])
        for name in STACKS
        for lid, r in resources(name, "AWS::CloudWatch::Alarm").items()
    }


def _watched(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric-math query."""
    if "MetricName" in alarm:
        return [
            {
                "Namespace": alarm["Namespace"],
                "MetricName": alarm["MetricName"],
                "Dimensions": alarm["Dimensions"],
            }
        ]
    return [q["MetricStat"]["Metric"] for q in alarm["Metrics"] if "MetricStat" in q]


def test_every_alarm_notifies_the_alerts_topic() -> None:
    alarms = _alarms()
    assert {stack for stack, _ in alarms} == {"hosts", "ingest", "etl"}
    for (stack, lid), alarm in alarms.items():
        assert {"Ref": "AlarmActionArn"} in alarm["AlarmActions"], (stack, lid)
        assert "Condition" not in template(stack)["Resources"][lid], (stack, lid)
        parameter = template(stack)["Parameters"]["AlarmActionArn"]
        assert "Default" not in parameter and parameter["AllowedPattern"].startswith("^arn:"), stack
    # stacks.yml passes the alerts stack's topic (or the operator's) to every stack with alarms.
    deployed = {
        t["amazon.aws.cloudformation"]["stack_name"].split("-", 1)[1]: t["amazon.aws.cloudformation"]
        for t in stack_tasks()
        if "amazon.aws.cloudformation" in t
    }
    for stack in ("hosts", "ingest", "etl"):
        assert deployed[stack]["template_parameters"]["AlarmActionArn"] == "{{ sbw_stacks_alarm_action }}"
    assert plain(props("alerts", "AlarmEmailSubscription")) == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert template("alerts")["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"
    assert template("alerts")["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}


def test_every_alarm_watches_a_metric_that_exists() -> None:
    etl_handler_src = (REPO / "lambda_src" / "sbw_clickstream" / "etl_handler.py").read_text()
    for (stack, lid), alarm in _alarms().items():
        for metric in _watched(alarm):
            if metric["Namespace"] == {"Ref": "MetricsNamespace"}:
                # The ETL's own EMF metrics: tests/test_etl_stack.py runs emit_metrics and compares.
                name = metric["MetricName"]
                assert (
                    f'"{name}"' in etl_handler_src or name.removeprefix("Run").lower() in etl_handler_src
                ), lid
            elif metric["Namespace"] == "SBW/Hosts":
                # The hosts' disk metric: tests/test_cfn_host_metrics.py compares it with roles/host_metrics.
                script = (REPO / "roles" / "host_metrics" / "files" / "sbw-host-metrics.py").read_text()
                assert f'"{metric["MetricName"]}"' in script, (stack, lid)
            else:
                assert metric["MetricName"] in AWS_METRICS[metric["Namespace"]], (stack, lid)
            dimension = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            # Each alarm watches a resource of its own stack (a Ref of the instance, function, API, queue).
            refs = [v for v in dimension.values() if isinstance(v, dict)]
            assert refs, (stack, lid)


def test_the_issue_16_alarms_exist() -> None:
    watched = {
        (stack, lid): {
            (m["Namespace"] if isinstance(m["Namespace"], str) else "ETL", m["MetricName"])
            for m in _watched(a)
        }
        for (stack, lid), a in _alarms().items()
    }
    by_stack: dict[str, set[tuple[str, str]]] = {}
    for (stack, _), metrics in watched.items():
        by_stack.setdefault(stack, set()).update(metrics)
    assert {
        ("AWS/ApiGateway", "5xx"),
        ("AWS/ApiGateway", "4xx"),
        ("AWS/ApiGateway", "Count"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
    } <= by_stack["ingest"]
    assert {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("ETL", "ObjectsQuarantined"),
        ("ETL", "RunSucceeded"),
        ("ETL", "LagSeconds"),
        ("ETL", "RunSkipped"),
    } <= by_stack["etl"]
    # Rates, not counts, for the API.
    for lid in ("ServerErrorRateAlarm", "ClientErrorRateAlarm"):
        (expression,) = [q["Expression"] for q in _alarms()[("ingest", lid)]["Metrics"] if "Expression" in q]
        assert "errors / requests" in expression
    # Freshness: hours without a successful run breach, even when no run reports at all.
    fresh = _alarms()[("etl", "FreshnessAlarm")]
    assert fresh["TreatMissingData"] == "breaching" and fresh["ComparisonOperator"] == "LessThanThreshold"
    # EC2 status checks on both hosts; a failed system check recovers the instance.
    for host in ("WebDb", "Dwh"):
        system = _alarms()[("hosts", f"{host}SystemCheckAlarm")]
        assert system["MetricName"] == "StatusCheckFailed_System"
        assert system["Dimensions"] == [{"Name": "InstanceId", "Value": {"Ref": f"{host}Instance"}}]
        assert {"Fn::Sub": "arn:${AWS::Partition}:automate:${AWS::Region}:ec2:recover"} in system[
            "AlarmActions"
        ]
        instance = _alarms()[("hosts", f"{host}InstanceCheckAlarm")]
        assert instance["MetricName"] == "StatusCheckFailed_Instance"
        # Disk use of the data directory's filesystem (published by roles/host_metrics).
        assert _alarms()[("hosts", f"{host}DiskAlarm")]["MetricName"] == "disk_used_percent"
