"""The hosts' disk metric on the parsed templates: what roles/host_metrics publishes is what the hosts
stack's disk alarms watch, the hosts may publish it (and only in its namespace), and the private host
reaches CloudWatch without a NAT (the monitoring interface endpoint). moto models no alarms; the
publishing itself is tested in tests/test_host_metrics.py (moto) and molecule/host_metrics (a host)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "host_metrics"
HOSTS = {"WebDb": "SBW_EC2_WebDB", "Dwh": "SBW_EC2_ShinyDWH"}


@cache
def template(name: str) -> dict[str, Any]:
    return cfn_yaml.load(str(REPO / "cloudformation" / f"{name}.yaml"))


def plain(value: Any) -> Any:
    """cfn-lint's node types as plain dicts, lists and strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def role_defaults() -> dict[str, Any]:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_disk_alarm_watches_what_the_role_publishes_and_notifies(host: str) -> None:
    alarm = plain(template("hosts")["Resources"][f"{host}DiskAlarm"])
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    p = alarm["Properties"]
    defaults = role_defaults()
    script = (ROLE / "files" / "sbw-host-metrics.py").read_text()
    assert p["Namespace"] == defaults["host_metrics_namespace"] == "SBW/Hosts"
    assert p["MetricName"] == "disk_used_percent" and '"disk_used_percent"' in script
    # The dimensions the script sends, in full: an alarm on a subset of them would watch nothing.
    assert p["Dimensions"] == [
        {"Name": "InstanceId", "Value": {"Ref": f"{host}Instance"}},
        {"Name": "path", "Value": defaults["host_metrics_paths"][0]},
    ]
    assert defaults["host_metrics_paths"] == ["/var/lib/postgresql"]
    assert re.findall(r'Dimensions\.member\.\d\.Name": "(\w+)"', script) == ["InstanceId", "path"]
    assert p["AlarmActions"] == [{"Ref": "AlarmActionArn"}] and p["OKActions"] == [{"Ref": "AlarmActionArn"}]
    assert p["AlarmName"] == f"{HOSTS[host]}-disk-used"
    assert (p["ComparisonOperator"], p["Threshold"], p["Statistic"]) == (
        "GreaterThanOrEqualToThreshold",
        85,
        "Maximum",
    )
    # The timer's interval is the alarm's period: every evaluated period has a point.
    assert p["Period"] == 300 and defaults["host_metrics_interval"] == "5min"


def test_hosts_may_put_metrics_in_that_namespace_only() -> None:
    resources = template("hosts")["Resources"]
    statements = plain(resources["SsmManagedInstancePolicy"]["Properties"]["PolicyDocument"]["Statement"])
    (metrics,) = [s for s in statements if "cloudwatch:PutMetricData" in str(s["Action"])]
    assert metrics == {
        "Sid": "HostMetrics",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": role_defaults()["host_metrics_namespace"]}},
    }
    # Both host roles carry it (the policy both attach).
    for role in ("WebDbRole", "DwhRole"):
        assert plain(resources[role]["Properties"]["ManagedPolicyArns"]) == [
            {"Ref": "SsmManagedInstancePolicy"}
        ]


def test_the_private_host_reaches_cloudwatch_through_the_monitoring_endpoint() -> None:
    resources = template("network")["Resources"]
    endpoint = plain(resources["MonitoringEndpoint"]["Properties"])
    assert endpoint == {
        "VpcId": {"Ref": "Vpc"},
        "VpcEndpointType": "Interface",
        "ServiceName": {"Fn::Sub": "com.amazonaws.${AWS::Region}.monitoring"},
        "PrivateDnsEnabled": True,
        "SubnetIds": [{"Ref": "PrivateSubnet"}],
        "SecurityGroupIds": [{"Ref": "SgVpcInterfaceEndpointSsm"}],
    }
    # The dwh host's only HTTPS egress besides S3 is to that group; the group admits the private subnet
    # and the public host's group.
    dwh_egress = plain(resources["SgAnalyticsShinyDwh"]["Properties"]["SecurityGroupEgress"])
    assert any(
        r.get("DestinationSecurityGroupId") == {"Ref": "SgVpcInterfaceEndpointSsm"} for r in dwh_egress
    )
    ingress = plain(resources["SgVpcInterfaceEndpointSsm"]["Properties"]["SecurityGroupIngress"])
    assert {"Ref": "PrivateSubnetCidr"} in [r.get("CidrIp") for r in ingress]
    assert {"Ref": "SgOltpWebDb"} in [r.get("SourceSecurityGroupId") for r in ingress]


def test_both_host_plays_apply_the_role_with_the_stacks_instance_id() -> None:
    for playbook, fact, output in (
        ("webdb", "sbw_webdb_instance_id", "WebDbInstance"),
        ("dwh", "sbw_dwh_instance_id", "DwhInstance"),
    ):
        plays = yaml.safe_load((REPO / "playbooks" / f"{playbook}.yml").read_text())
        roles = [r for play in plays for r in play.get("roles", [])]
        (applied,) = [r for r in roles if isinstance(r, dict) and r.get("role") == "host_metrics"]
        assert applied["vars"]["host_metrics_instance_id"] == f"{{{{ {fact} | default('') }}}}"
        # ... the fact stacks.yml writes from the hosts stack's output, which is the alarm's dimension.
        assert plain(template("hosts")["Outputs"][f"{output}Id"]["Value"]) == {"Ref": output}
