"""The CloudFormation templates, parsed: the seed's facts and the least-privilege rules, asserted.

These checks cover what the moto stand-in does not model (see tests/test_stacks_moto.py for the list):
security group egress, bucket policies, endpoint policies, the HTTP API, alarms, Glue/Athena.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml
from sbw_clickstream import contract

REPO = Path(__file__).resolve().parents[1]
CFN = REPO / "cloudformation"
STACKS = ("alerts", "network", "storage", "hosts", "ingest", "etl", "auth", "lake")


@cache
def template(name: str) -> dict[str, Any]:
    return cfn_yaml.load(str(CFN / f"{name}.yaml"))


def resources(name: str, type_: str | None = None) -> dict[str, dict[str, Any]]:
    found = template(name)["Resources"]
    return {k: v for k, v in found.items() if type_ is None or v["Type"] == type_}


def props(name: str, logical_id: str) -> dict[str, Any]:
    return template(name)["Resources"][logical_id].get("Properties", {})


def default(name: str, parameter: str) -> Any:
    return template(name)["Parameters"][parameter].get("Default")


def _plain(value: Any) -> Any:
    """Strip cfn-lint's node classes so values compare as plain dicts/lists/strings."""
    return json.loads(json.dumps(value))


# --- every template -----------------------------------------------------------------------------


def test_all_eight_stacks_exist_and_nothing_else() -> None:
    assert sorted(p.stem for p in CFN.glob("*.yaml")) == sorted(STACKS)


@pytest.mark.parametrize("name", STACKS)
def test_outputs_are_exported_under_the_stack_name(name: str) -> None:
    outputs = template(name)["Outputs"]
    assert outputs
    for key, output in outputs.items():
        assert _plain(output["Export"]["Name"]) == {"Fn::Sub": f"${{AWS::StackName}}-{key}"}, key


@pytest.mark.parametrize("name", STACKS)
def test_no_nat_and_no_yaml_aliases(name: str) -> None:
    text = (CFN / f"{name}.yaml").read_text()
    assert "AWS::EC2::NatGateway" not in text
    events = list(yaml.parse(text, Loader=yaml.SafeLoader))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)], (
        "CloudFormation rejects YAML anchors/aliases"
    )


@pytest.mark.parametrize("name", STACKS)
def test_no_parameter_defaults_outside_the_seed_region(name: str) -> None:
    for parameter, spec in template(name).get("Parameters", {}).items():
        value = str(spec.get("Default", ""))
        regions = re.findall(r"[a-z]{2}-[a-z]+-\d", value)
        assert set(regions) <= {"ap-southeast-1"}, (parameter, value)


# --- network -------------------------------------------------------------------------------------


def test_vpc_and_subnets_use_the_seed_cidrs_names_and_zone() -> None:
    assert default("network", "VpcCidr") == "10.0.0.0/16"
    assert default("network", "PublicSubnetCidr") == "10.0.0.0/20"
    assert default("network", "PrivateSubnetCidr") == "10.0.128.0/20"
    assert default("network", "PublicSubnetName") == "SBW_Project-subnet-public1-ap-southeast-1a"
    assert default("network", "PrivateSubnetName") == "SBW_Project-subnet-private1-ap-southeast-1a"
    for subnet in ("PublicSubnet", "PrivateSubnet"):
        p = props("network", subnet)
        assert _plain(p["AvailabilityZone"]) == {"Fn::Sub": "${AWS::Region}a"}
        assert p["MapPublicIpOnLaunch"] is False
    vpc = props("network", "Vpc")
    assert vpc["EnableDnsSupport"] is True and vpc["EnableDnsHostnames"] is True


def test_routes_public_default_to_igw_private_none() -> None:
    routes = resources("network", "AWS::EC2::Route")
    assert list(routes) == ["PublicDefaultRoute"]
    route = routes["PublicDefaultRoute"]["Properties"]
    assert _plain(route["RouteTableId"]) == {"Ref": "PublicRouteTable"}
    assert route["DestinationCidrBlock"] == "0.0.0.0/0"
    assert _plain(route["GatewayId"]) == {"Ref": "InternetGateway"}
    # The private table's only route besides local is the S3 gateway endpoint's prefix list.
    gateway = props("network", "S3GatewayEndpoint")
    assert gateway["VpcEndpointType"] == "Gateway"
    assert _plain(gateway["RouteTableIds"]) == [{"Ref": "PrivateRouteTable"}]
    text = (CFN / "network.yaml").read_text()
    for forbidden in (
        "NatGatewayId",
        "EgressOnlyInternetGateway",
        "TransitGatewayId",
        "VpcPeeringConnectionId",
    ):
        assert forbidden not in text


def test_interface_endpoints_for_ssm_with_private_dns_in_the_private_subnet() -> None:
    endpoints = resources("network", "AWS::EC2::VPCEndpoint")
    interface = {
        _plain(e["Properties"]["ServiceName"])["Fn::Sub"]: e["Properties"]
        for e in endpoints.values()
        if e["Properties"]["VpcEndpointType"] == "Interface"
    }
    # SSM's three, and monitoring for the hosts' disk metric (tests/test_cfn_host_metrics.py).
    assert sorted(interface) == [
        "com.amazonaws.${AWS::Region}.ec2messages",
        "com.amazonaws.${AWS::Region}.monitoring",
        "com.amazonaws.${AWS::Region}.ssm",
        "com.amazonaws.${AWS::Region}.ssmmessages",
    ]
    for p in interface.values():
        assert p["PrivateDnsEnabled"] is True
        assert _plain(p["SubnetIds"]) == [{"Ref": "PrivateSubnet"}]
        assert _plain(p["SecurityGroupIds"]) == [{"Ref": "SgVpcInterfaceEndpointSsm"}]


def test_gateway_endpoint_policy_allows_only_project_and_ssm_agent_buckets() -> None:
    statements = props("network", "S3GatewayEndpoint")["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    arns = [_plain(r)["Fn::Sub"] for s in statements for r in s["Resource"]]
    buckets = {re.match(r"arn:\$\{AWS::Partition\}:s3:::([^/]+)", a).group(1) for a in arns}
    assert buckets == {
        "${RawBucketName}",
        "${ArtifactsBucketName}",
        "${SsmTransferBucketName}",
        "amazon-ssm-${AWS::Region}",
        "amazon-ssm-packages-${AWS::Region}",
        "${AWS::Region}-birdwatcher-prod",
        "aws-ssm-${AWS::Region}",
        "aws-ssm-document-attachments-${AWS::Region}",
        "patch-baseline-snapshot-${AWS::Region}",
    }
    ssm_agent = next(s for s in statements if s["Sid"] == "SsmAgentRegionalBuckets")
    assert ssm_agent["Action"] == "s3:GetObject"
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "s3:*" not in actions and "*" not in actions


def _rules(logical_id: str, kind: str) -> set[tuple[Any, ...]]:
    """Every rule of a group, inline and as separate resources: (proto, from, to, source/destination)."""
    found: set[tuple[Any, ...]] = set()
    inline = props("network", logical_id).get(f"SecurityGroup{kind}", [])
    standalone = [
        r["Properties"]
        for r in resources("network", f"AWS::EC2::SecurityGroup{kind}").values()
        if _plain(r["Properties"]["GroupId"]) == {"Ref": logical_id}
    ]
    for rule in [*inline, *standalone]:
        peer_keys = (
            "CidrIp",
            "SourceSecurityGroupId",
            "DestinationSecurityGroupId",
            "DestinationPrefixListId",
        )
        peer = next(_plain(rule[k]) for k in peer_keys if k in rule)
        peer = peer.get("Ref", peer) if isinstance(peer, dict) else peer
        found.add((str(rule["IpProtocol"]), rule.get("FromPort"), rule.get("ToPort"), peer))
        assert rule.get("Description"), rule
    return found


def test_security_groups_exactly_the_seed_rules_plus_the_documented_extras() -> None:
    names = {
        _plain(r["Properties"]["GroupName"]) for r in resources("network", "AWS::EC2::SecurityGroup").values()
    }
    assert names == {
        "sg_oltp_webDB",
        "sg_analytics_ShinyDWH",
        "sg_Lambda_ETL",
        "sg_ec2_VPC_Interface_endpoint_SSM",
    }

    assert _rules("SgOltpWebDb", "Ingress") == {
        ("tcp", 5432, 5432, "AdminCidr"),  # seed: 5432 from admin IPs
        ("tcp", 5432, 5432, "AmplifyCidr"),  # seed: 5432 from Amplify (SeparateAmplifyRule)
        ("tcp", 22, 22, "AdminCidr"),  # seed: optional 22 from admin IP (AllowAdminSsh)
    }
    assert resources("network")["SgWebDbIngressSsh"]["Condition"] == "AdminSsh"
    assert resources("network")["SgWebDbIngressAmplify"]["Condition"] == "SeparateAmplifyRule"
    assert default("network", "AllowAdminSsh") == "false"
    assert _rules("SgOltpWebDb", "Egress") == {("tcp", 443, 443, "0.0.0.0/0"), ("tcp", 80, 80, "0.0.0.0/0")}

    assert _rules("SgAnalyticsShinyDwh", "Ingress") == {
        ("tcp", 5432, 5432, "SgLambdaEtl"),  # seed
        ("tcp", 3838, 3838, "SgAnalyticsShinyDwh"),  # seed, narrowest source: itself
    }
    assert _rules("SgAnalyticsShinyDwh", "Egress") == {
        ("tcp", 443, 443, "SgVpcInterfaceEndpointSsm"),  # extra: SSM agent
        ("tcp", 443, 443, "S3PrefixListId"),  # extra: packages, agent, transfers via the gateway
    }

    assert _rules("SgLambdaEtl", "Ingress") == set()
    assert _rules("SgLambdaEtl", "Egress") == {
        ("tcp", 5432, 5432, "SgAnalyticsShinyDwh"),  # seed
        ("tcp", 443, 443, "S3PrefixListId"),  # seed: S3 via the gateway endpoint
        ("tcp", 443, 443, "SgVpcInterfaceEndpointSsm"),  # extra (DESIGN point 8): password via ssm
    }

    assert _rules("SgVpcInterfaceEndpointSsm", "Ingress") == {
        ("tcp", 443, 443, "PrivateSubnetCidr"),  # seed
        ("tcp", 443, 443, "SgOltpWebDb"),  # extra: private DNS sends the public host here too
    }
    assert _rules("SgVpcInterfaceEndpointSsm", "Egress") == {("-1", None, None, "127.0.0.1/32")}


def test_no_ingress_from_anywhere_and_every_extra_rule_is_explained() -> None:
    text = (CFN / "network.yaml").read_text()
    for kind in ("Ingress",):
        for logical_id in resources("network", "AWS::EC2::SecurityGroup"):
            assert all(peer != "0.0.0.0/0" for *_, peer in _rules(logical_id, kind))
    assert text.count("# Extra") >= 5
    assert "DESIGN.md point 8" in text


# --- storage -------------------------------------------------------------------------------------


def test_buckets_private_encrypted_tls_only_with_lifecycle() -> None:
    buckets = resources("storage", "AWS::S3::Bucket")
    assert set(buckets) == {"RawBucket", "AssetsBucket", "ArtifactsBucket", "SsmTransferBucket"}
    assert default("storage", "RawBucketName") == "clickstream-s3-ingest"
    assert default("storage", "AssetsBucketName") == "clickstream-s3-sbw"
    policies = {
        _plain(p["Properties"]["Bucket"])["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources("storage", "AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(buckets)
    for logical_id, bucket in buckets.items():
        p = bucket["Properties"]
        assert set(p["PublicAccessBlockConfiguration"].values()) == {True}, logical_id
        sse = p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        assert sse["SSEAlgorithm"] == "AES256"
        assert p["LifecycleConfiguration"]["Rules"], logical_id
        deny = next(s for s in policies[logical_id] if s["Sid"] == "DenyInsecureTransport")
        assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
        assert _plain(deny["Condition"]) == {"Bool": {"aws:SecureTransport": "false"}}


def test_ssm_transfer_bucket_unversioned_and_expires_after_a_day() -> None:
    p = props("storage", "SsmTransferBucket")
    assert "VersioningConfiguration" not in p
    (rule,) = p["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 1


def test_repository_prefix_readable_only_through_the_gateway_endpoint() -> None:
    statements = props("storage", "ArtifactsBucketPolicy")["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Action"] == "s3:GetObject"
    assert _plain(allow["Resource"]) == {"Fn::Sub": "${ArtifactsBucket.Arn}/${RepoPrefix}/*"}
    assert _plain(allow["Condition"]) == {"StringEquals": {"aws:sourceVpce": {"Ref": "S3GatewayEndpointId"}}}
    for logical_id in ("RawBucketPolicy", "AssetsBucketPolicy", "SsmTransferBucketPolicy"):
        assert all(s["Effect"] == "Deny" for s in props("storage", logical_id)["PolicyDocument"]["Statement"])


# --- hosts ---------------------------------------------------------------------------------------


def test_hosts_debian_imdsv2_encrypted_ssm_agent_and_tags() -> None:
    # Pinned to a dated release (issue 16): "latest" would replace both instances at the next update after
    # Debian publishes an AMI. The playbook's default is the template's.
    pinned = default("hosts", "DebianAmiParameter")
    assert re.fullmatch(r"/aws/service/debian/release/12/[0-9]{8}-[0-9]+/amd64", pinned)
    settle = next(t for t in _stack_tasks() if "sbw_stacks" in t.get("ansible.builtin.set_fact", {}))
    settings = settle["ansible.builtin.set_fact"]["sbw_stacks"]
    release = re.search(r"default\('([0-9]{8}-[0-9]+)'\)", settings["debian_release"]).group(1)
    assert pinned == f"/aws/service/debian/release/12/{release}/amd64"
    assert f"default('{release}')" in settings["debian_ami_parameter"]
    lt = props("hosts", "HostLaunchTemplate")["LaunchTemplateData"]["MetadataOptions"]
    assert lt["HttpTokens"] == "required"
    expected = {
        "WebDbInstance": ("SBW_EC2_WebDB", "webdb", "PublicSubnetId", "SgOltpWebDbId"),
        "DwhInstance": ("SBW_EC2_ShinyDWH", "dwh", "PrivateSubnetId", "SgAnalyticsShinyDwhId"),
    }
    for logical_id, (name, role, subnet, sg) in expected.items():
        p = props("hosts", logical_id)
        assert _plain(p["ImageId"]) == {"Fn::Sub": "{{resolve:ssm:${DebianAmiParameter}}}"}
        assert _plain(p["LaunchTemplate"]["LaunchTemplateId"]) == {"Ref": "HostLaunchTemplate"}
        assert _plain(p["SubnetId"]) == {"Ref": subnet}
        assert _plain(p["SecurityGroupIds"]) == [{"Ref": sg}]
        assert all(m["Ebs"]["Encrypted"] is True for m in p["BlockDeviceMappings"])
        tags = {t["Key"]: _plain(t["Value"]) for t in p["Tags"]}
        assert tags["Name"] == name and tags["Role"] == role and tags["Project"] == {"Ref": "ProjectName"}
        user_data = _plain(p["UserData"])["Fn::Base64"]["Fn::Sub"]
        assert "amazon-ssm-${AWS::Region}/latest/debian_amd64/amazon-ssm-agent.deb" in user_data
        assert "https://s3.${AWS::Region}.amazonaws.com/" in user_data
        assert "systemctl enable --now amazon-ssm-agent" in user_data
        assert "NetworkInterfaces" not in p
    # Only the public host gets a public address (Elastic IP); the private one none.
    (eip,) = resources("hosts", "AWS::EC2::EIP").values()
    assert _plain(eip["Properties"]["InstanceId"]) == {"Ref": "WebDbInstance"}


def _role_statements(name: str, role: str) -> list[dict[str, Any]]:
    """Every statement that applies to a role of the template: its inline policies and the managed
    policies of the same template it attaches (an AWS-managed ARN fails the test: it cannot be read here)."""
    p = props(name, role)
    statements = [s for policy in p.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]
    for arn in _plain(p.get("ManagedPolicyArns", [])):
        assert isinstance(arn, dict) and set(arn) == {"Ref"}, (
            f"{role} attaches a policy not in the template: {arn}"
        )
        statements += props(name, arn["Ref"])["PolicyDocument"]["Statement"]
    return statements


def _glob(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def _allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """IAM evaluation for one action on one resource: an explicit deny wins, else any allow."""

    def arn(value: Any) -> str:
        text = value["Fn::Sub"] if isinstance(value, dict) else value
        for variable, plain in (
            ("AWS::Partition", "aws"),
            ("AWS::Region", "ap-southeast-1"),
            ("AWS::AccountId", "123456789012"),
        ):
            text = text.replace("${" + variable + "}", plain)
        return text

    def matches(s: dict[str, Any]) -> bool:
        resources = _plain(s["Resource"])
        resources = resources if isinstance(resources, list) else [resources]
        return any(_glob(a, action) for a in _actions(s)) and any(_glob(arn(r), resource) for r in resources)

    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


def test_one_role_per_host_without_the_managed_ssm_core_policy() -> None:
    profiles = {
        lid: _plain(props("hosts", lid)["IamInstanceProfile"]) for lid in ("WebDbInstance", "DwhInstance")
    }
    assert profiles == {
        "WebDbInstance": {"Ref": "WebDbInstanceProfile"},
        "DwhInstance": {"Ref": "DwhInstanceProfile"},
    }
    assert _plain(props("hosts", "WebDbInstanceProfile")["Roles"]) == [{"Ref": "WebDbRole"}]
    assert _plain(props("hosts", "DwhInstanceProfile")["Roles"]) == [{"Ref": "DwhRole"}]
    assert set(resources("hosts", "AWS::IAM::Role")) == {"WebDbRole", "DwhRole"}
    for role in ("WebDbRole", "DwhRole"):
        assert _plain(props("hosts", role)["ManagedPolicyArns"]) == [{"Ref": "SsmManagedInstancePolicy"}]


@pytest.mark.parametrize("role", ["WebDbRole", "DwhRole"])
def test_no_host_reads_project_parameters_or_decrypts(role: str) -> None:
    """Ansible reads the passwords on the controller; a host role reads no /sbw/* parameter at all."""
    statements = _role_statements("hosts", role)
    for action in (
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
    ):
        for parameter in (
            "/sbw/dwh/etl_password",
            "/sbw/dwh/dashboard_password",
            "/sbw/webdb/app_password",
            "/sbw/postgres/superuser",
        ):
            resource = f"arn:aws:ssm:ap-southeast-1:123456789012:parameter{parameter}"
            assert not _allows(statements, action, resource), (role, action, parameter)
    assert not any(a.startswith("kms:") for s in statements if s["Effect"] == "Allow" for a in _actions(s))
    # The agent itself still works: it registers and opens Session Manager channels.
    assert _allows(statements, "ssm:UpdateInstanceInformation", "*")
    assert _allows(statements, "ssmmessages:OpenDataChannel", "*")
    assert _allows(statements, "ec2messages:GetMessages", "*")


def test_webdb_role_cannot_read_the_warehouse_parameters() -> None:
    statements = _role_statements("hosts", "WebDbRole")
    arn = "arn:aws:ssm:ap-southeast-1:123456789012:parameter/sbw/dwh/etl_password"
    assert not _allows(statements, "ssm:GetParameter", arn)
    # Not by luck of a missing allow: an explicit deny covers /sbw/* should a broad grant come back.
    assert not _allows(
        [*statements, {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}], "ssm:GetParameter", arn
    )


def test_only_the_dwh_host_reads_the_repository_and_webdb_has_no_s3() -> None:
    repo = "arn:aws:s3:::${ArtifactsBucketName}/${RepoPrefix}/dists/bookworm/InRelease"
    assert _allows(_role_statements("hosts", "DwhRole"), "s3:GetObject", repo)
    assert not any(a.startswith("s3:") for s in _role_statements("hosts", "WebDbRole") for a in _actions(s))


def test_parameter_key_policy_names_the_etl_the_operators_and_root_for_administration() -> None:
    key = props("etl", "ParameterKey")
    assert key["EnableKeyRotation"] is True
    # A JSON string under !Sub (moto needs a string): its placeholders sit inside JSON strings.
    document = json.loads(_plain(key["KeyPolicy"])["Fn::Sub"])
    statements = {s["Sid"]: s for s in document["Statement"]}
    principals = {sid: s["Principal"]["AWS"] for sid, s in statements.items()}
    assert principals == {
        "AccountRootAdministersOnly": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root",
        "EtlDecryptsThroughSsm": "${FunctionRole.Arn}",
        "OperatorsUseThroughSsm": "${OperatorPrincipalArn}",
    }
    assert all(s["Effect"] == "Allow" for s in statements.values())
    # The root may administer, never use the key: no other principal of the account decrypts through IAM.
    root = _actions(statements["AccountRootAdministersOnly"])
    for use in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:CreateGrant"):
        # (kms:Create* would include CreateGrant: a grant to oneself is a way to decrypt.)
        assert not any(_glob(a, use) for a in root), use
    assert _actions(statements["EtlDecryptsThroughSsm"]) == ["kms:Decrypt"]
    for sid in ("EtlDecryptsThroughSsm", "OperatorsUseThroughSsm"):
        assert statements[sid]["Condition"] == {
            "StringEquals": {"kms:ViaService": "ssm.${AWS::Region}.amazonaws.com"}
        }
    assert (key_policy := template("etl")["Resources"]["ParameterKey"])["DeletionPolicy"] == "Retain"
    assert key_policy["UpdateReplacePolicy"] == "Retain"


def test_secrets_are_written_with_the_stacks_key() -> None:
    """The roles that write /sbw/* SecureStrings pass the key id the stacks' facts carry."""
    for role in ("dw_schema", "oltp_schema"):
        (task, *_) = yaml.safe_load((REPO / "roles" / role / "tasks" / "secrets.yml").read_text())
        assert (
            task["community.aws.ssm_parameter"]["key_id"]
            == f"{{{{ {role}_kms_key_id | default(omit, true) }}}}"
        )
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
        assert defaults[f"{role}_kms_key_id"] == "{{ sbw_ssm_kms_key_id | default('') }}"
    facts = next(t for t in _stack_tasks() if t.get("name") == "Keep the facts the host plays need")
    assert facts["ansible.builtin.set_fact"]["sbw_stacks_facts"]["sbw_ssm_kms_key_id"] == (
        "{{ sbw_stacks_out.etl.ParameterKeyId }}"
    )


# --- alarms --------------------------------------------------------------------------------------

# Metrics AWS publishes by itself, per namespace (the ones the alarms may watch).
AWS_METRICS = {
    "AWS/Lambda": {"Errors", "Throttles", "Invocations", "Duration"},
    "AWS/EC2": {"StatusCheckFailed_System", "StatusCheckFailed_Instance", "StatusCheckFailed"},
    "AWS/ApiGateway": {"4xx", "5xx", "Count", "Latency", "IntegrationLatency"},
    "AWS/SQS": {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"},
}


def _alarms() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (name, lid): _plain(r["Properties"])
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
        for t in _stack_tasks()
        if "amazon.aws.cloudformation" in t
    }
    for stack in ("hosts", "ingest", "etl"):
        assert deployed[stack]["template_parameters"]["AlarmActionArn"] == "{{ sbw_stacks_alarm_action }}"
    assert _plain(props("alerts", "AlarmEmailSubscription")) == {
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


# --- ingest --------------------------------------------------------------------------------------


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resolve_sub(value: Any) -> str:
    """A Fn::Sub of the ingest-policy.json style back into its template string (variables substituted
    by their own placeholder names, which is what the JSON file holds)."""
    value = _plain(value)
    if isinstance(value, str):
        return value
    template_string, variables = value["Fn::Sub"]
    for name, ref in variables.items():
        assert ref == {"Ref": {"RawBucket": "RawBucketName", "IngestFunctionName": "FunctionName"}[name]}
    return template_string


def test_ingest_role_is_exactly_the_policy_file() -> None:
    policy_file = json.loads((REPO / "lambda_src/sbw_clickstream/iam/ingest-policy.json").read_text())
    (policy,) = props("ingest", "FunctionRole")["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    rendered = []
    for s in statements:
        resource = s["Resource"]
        resource = (
            [_resolve_sub(r) for r in resource] if isinstance(resource, list) else _resolve_sub(resource)
        )
        action = s["Action"] if isinstance(s["Action"], str) else list(s["Action"])
        rendered.append({"Sid": s["Sid"], "Effect": s["Effect"], "Action": action, "Resource": resource})
    assert rendered == policy_file["Statement"]
    # And what it means: S3 is PutObject only, on events/ and failed/ of the raw bucket.
    s3 = [a for s in statements for a in _actions(s) if a.startswith("s3:")]
    assert s3 == ["s3:PutObject"]
    assert {a.split(":")[0] for s in statements for a in _actions(s)} == {"s3", "logs"}
    assert "ManagedPolicyArns" not in props("ingest", "FunctionRole")


def test_ingest_function_http_api_from_the_openapi_document() -> None:
    fn = props("ingest", "Function")
    assert default("ingest", "FunctionName") == "clickstream-lambda-ingest"
    assert default("ingest", "ApiName") == "clickstream-http-api"
    assert fn["Runtime"] == "python3.11"
    assert fn["Handler"] == "sbw_clickstream.ingest_handler.handler"
    assert "VpcConfig" not in fn
    assert set(fn["Environment"]["Variables"]) >= {"RAW_BUCKET", "CORS_ALLOW_ORIGINS"}
    api = props("ingest", "HttpApi")
    assert _plain(api["BodyS3Location"]) == {
        "Bucket": {"Ref": "ArtifactsBucketName"},
        "Key": {"Ref": "OpenApiKey"},
    }
    stage = props("ingest", "DefaultStage")
    assert stage["AutoDeploy"] is True and stage["StageName"] == "$default"
    assert set(stage["DefaultRouteSettings"]) >= {"ThrottlingRateLimit", "ThrottlingBurstLimit"}
    assert _plain(stage["AccessLogSettings"]["DestinationArn"]) == {"Fn::GetAtt": ["AccessLogGroup", "Arn"]}
    permission = props("ingest", "InvokePermission")
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert _plain(permission["SourceArn"])["Fn::Sub"].endswith(":${HttpApi}/*/*/clickstream")
    # The OpenAPI document carries the one placeholder stacks.yml substitutes.
    document = (REPO / "lambda_src/sbw_clickstream/openapi/clickstream-http-api.yaml").read_text()
    assert "${IngestFunctionArn}" in document
    assert re.findall(r"\$\{(\w+)\}", document) == ["IngestFunctionArn"] * document.count("${")
    spec = yaml.safe_load(document)
    assert spec["info"]["title"] == "clickstream-http-api"
    assert "post" in spec["paths"]["/clickstream"]


def test_no_getatt_of_unmodelled_resources_in_outputs() -> None:
    """moto skips ApiGatewayV2/Cognito/Glue/Athena/Amplify; a GetAtt of one in Outputs breaks the stack."""
    unmodelled = ("AWS::ApiGatewayV2::", "AWS::Cognito::", "AWS::Glue::", "AWS::Athena::", "AWS::Amplify::")
    for name in STACKS:
        skipped = {k for k, v in resources(name).items() if v["Type"].startswith(unmodelled)}
        for output in template(name)["Outputs"].values():
            value = _plain(output["Value"])
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                assert value["Fn::GetAtt"][0] not in skipped, (name, value)


# --- etl -----------------------------------------------------------------------------------------


def test_etl_function_in_the_private_subnet_with_the_seed_environment() -> None:
    fn = props("etl", "Function")
    assert default("etl", "FunctionName") == "SBW_Lamda_ETL"
    assert fn["Runtime"] == "python3.11"
    assert fn["Handler"] == "sbw_clickstream.etl_handler.handler"
    assert _plain(fn["VpcConfig"]) == {
        "SubnetIds": [{"Ref": "PrivateSubnetId"}],
        "SecurityGroupIds": [{"Ref": "SgLambdaEtlId"}],
    }
    env = _plain(fn["Environment"]["Variables"])
    assert {k: v for k, v in env.items() if not k.startswith("POWERTOOLS_")} == {
        "DWH_HOST": {"Ref": "DwhHost"},
        "DWH_PORT": {"Ref": "DwhPort"},
        "DWH_USER": {"Ref": "DwhUser"},
        "DWH_PASSWORD_PARAM": {"Ref": "DwhPasswordParameter"},
        "DWH_DATABASE": {"Ref": "DwhDatabase"},
        "RAW_BUCKET": {"Ref": "RawBucketName"},
    }
    assert "DWH_PASSWORD" not in env
    assert default("etl", "DwhPort") == "5432"
    assert default("etl", "DwhUser") == "sbw_etl"
    assert default("etl", "DwhDatabase") == "clickstream_dw"
    assert default("etl", "DwhPasswordParameter") == "/sbw/dwh/etl_password"


def test_etl_role_reads_only_the_raw_bucket_and_its_one_parameter() -> None:
    (policy,) = props("etl", "FunctionRole")["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    by_service: dict[str, set[str]] = {}
    for s in statements.values():
        for action in _actions(s):
            by_service.setdefault(action.split(":")[0], set()).add(action)
    assert by_service["s3"] == {"s3:ListBucket", "s3:GetObject"}
    assert by_service["ssm"] == {"ssm:GetParameter"}
    assert by_service["sqs"] == {"sqs:SendMessage"}
    assert by_service["logs"] == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert set(by_service) == {"s3", "ssm", "sqs", "logs", "ec2"}
    # What a VPC function needs to attach to its subnet (AWSLambdaVPCAccessExecutionRole's set), no more.
    assert by_service["ec2"] == {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    assert _plain(statements["ReadRawEvents"]["Resource"]) == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${RawBucketName}/events/*"
    }
    assert _plain(statements["ListRawEvents"]["Condition"]) == {"StringLike": {"s3:prefix": ["events/*"]}}
    assert _plain(statements["ReadPasswordParameter"]["Resource"]) == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
        ":parameter${DwhPasswordParameter}"
    }
    assert "ManagedPolicyArns" not in props("etl", "FunctionRole")


def test_etl_schedule_failure_destination_alarm_and_log_retention() -> None:
    rule = props("etl", "HourlyRule")
    assert default("etl", "RuleName") == "SBW_ETL_HOURLY_RULE"
    assert default("etl", "ScheduleExpression") == "rate(1 hour)"
    assert _plain(rule["Targets"][0]["Arn"]) == {"Fn::GetAtt": ["Function", "Arn"]}
    invoke = props("etl", "FunctionEventInvokeConfig")
    assert _plain(invoke["DestinationConfig"]["OnFailure"]["Destination"]) == {
        "Fn::GetAtt": ["FailureQueue", "Arn"]
    }
    alarm = props("etl", "ErrorsAlarm")
    assert alarm["MetricName"] == "Errors" and alarm["Namespace"] == "AWS/Lambda"
    assert props("etl", "FunctionLogGroup")["RetentionInDays"]


# --- auth and lake -------------------------------------------------------------------------------


def test_auth_public_client_and_optional_amplify() -> None:
    client = props("auth", "UserPoolClient")
    assert client["GenerateSecret"] is False
    assert resources("auth")["AmplifyApp"]["Condition"] == "CreateAmplifyApp"
    assert template("auth")["Parameters"]["AmplifyAccessToken"]["NoEcho"] is True


def test_lake_table_columns_are_the_stored_event_contract() -> None:
    table = props("lake", "EventsTable")["TableInput"]
    columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [*contract.EVENT_FIELDS, *contract.ENRICHMENT_FIELDS]
    params = _plain(table["Parameters"])
    assert params["projection.enabled"] == "true"
    assert params["projection.dt.format"] == "yyyy/MM/dd"
    assert params["storage.location.template"] == {"Fn::Sub": "s3://${RawBucketName}/events/${!dt}/"}
    assert (
        table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
        == "org.openx.data.jsonserde.JsonSerDe"
    )
    queries = resources("lake", "AWS::Athena::NamedQuery")
    assert len(queries) >= 5
    for q in queries.values():
        assert "FROM clickstream_events" in q["Properties"]["QueryString"]


# --- playbooks/stacks.yml against the templates ----------------------------------------------------


def _stack_tasks() -> list[dict[str, Any]]:
    plays = yaml.safe_load((REPO / "playbooks" / "stacks.yml").read_text())
    found: list[dict[str, Any]] = []

    def walk(tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            found.append(task)
            walk(task.get("block", []) + task.get("rescue", []) + task.get("always", []))

    for play in plays:
        walk(play.get("tasks", []))
    return found


def test_stacks_playbook_passes_every_template_parameter() -> None:
    """All parameters explicit: otherwise a re-run counts as an update (moto) or drifts from defaults."""
    deployed = []
    for task in _stack_tasks():
        module = task.get("amazon.aws.cloudformation")
        if not module:
            continue
        name = re.search(r"/(\w+)\.yaml", module["template_body"]).group(1)
        deployed.append(name)
        assert set(module["template_parameters"]) == set(template(name)["Parameters"]), name
        assert module["stack_name"] == f"{{{{ sbw_stacks.prefix }}}}-{name}"
    assert deployed == list(STACKS)


def test_every_aws_call_of_the_playbook_takes_the_endpoint_override() -> None:
    calls = [(t["name"], m) for t in _stack_tasks() for k, m in t.items() if k.startswith("amazon.aws.")]
    assert len(calls) >= 11
    for name, module in calls:
        assert module["endpoint_url"] == "{{ sbw_aws_endpoint_url | default(omit) }}", name
        assert module["region"] == "{{ sbw_aws_region }}", name


# --- data protection (issue 16 §1) ---------------------------------------------------------------


def test_no_stateful_resource_without_deletion_and_replace_policies() -> None:
    """cfn-lint's informational I3011 (stateful resource without DeletionPolicy/UpdateReplacePolicy)."""
    run = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "cfn-lint"),
            "-c",
            "I",
            "--",
            *sorted(str(p) for p in CFN.glob("*.yaml")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "I3011" not in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("stack", "logical_id"),
    [
        ("storage", "RawBucket"),
        ("storage", "AssetsBucket"),
        ("hosts", "WebDbInstance"),
        ("hosts", "DwhInstance"),
        ("auth", "UserPool"),
        ("etl", "ParameterKey"),
    ],
)
def test_what_holds_data_is_retained(stack: str, logical_id: str) -> None:
    resource = template(stack)["Resources"][logical_id]
    assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")


def _deploy_task(stack: str) -> dict[str, Any]:
    (task,) = [
        t["amazon.aws.cloudformation"]
        for t in _stack_tasks()
        if "amazon.aws.cloudformation" in t
        and t["amazon.aws.cloudformation"]["stack_name"].endswith(f"-{stack}")
    ]
    return task


def test_data_stacks_have_termination_protection_and_the_stack_policy() -> None:
    play_vars = yaml.safe_load((REPO / "playbooks" / "stacks.yml").read_text())[1]["vars"]
    allow, deny = play_vars["sbw_stacks_policy"]["Statement"]
    assert (allow["Effect"], allow["Action"], allow["Resource"]) == ("Allow", "Update:*", "*")
    assert deny["Effect"] == "Deny" and sorted(deny["Action"]) == ["Update:Delete", "Update:Replace"]
    assert sorted(deny["Condition"]["StringEquals"]["ResourceType"]) == [
        "AWS::EC2::Instance",
        "AWS::EC2::Volume",
        "AWS::S3::Bucket",
    ]
    for stack in ("storage", "hosts"):
        task = _deploy_task(stack)
        assert task["termination_protection"] is True, stack
        assert task["stack_policy_body"] == "{{ sbw_stacks_policy }}", stack
        assert task["stack_policy_on_update_body"] == "{{ __sbw_stacks_policy_during_update }}", stack
    assert _deploy_task("auth")["termination_protection"] is True
    # The override is explicit, for one run: without sbw_stacks_allow_replace nothing is passed.
    assert play_vars["__sbw_stacks_policy_during_update"] == (
        "{{ sbw_stacks_policy_override if (sbw_stacks_allow_replace | default(false) | bool) else omit }}"
    )
    # Every type the policy protects is one the data stacks hold (or will: EBS data volumes).
    held = {r["Type"] for s in ("storage", "hosts") for r in template(s)["Resources"].values()}
    assert {"AWS::EC2::Instance", "AWS::S3::Bucket"} <= held
