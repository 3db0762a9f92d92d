"""The network stack: the seed's CIDRs, routes (no NAT), the SSM interface endpoints, the S3 gateway
endpoint's policy and the security groups' rules exactly.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

import re
from typing import Any

from tests.cfn_support import (
    CFN,
    default,
    deploy_task,
    plain,
    props,
    resources,
)


def test_vpc_and_subnets_use_the_seed_cidrs_names_and_zone() -> None:
    assert default("network", "VpcCidr") == "10.0.0.0/16"
    assert default("network", "PublicSubnetCidr") == "10.0.0.0/20"
    assert default("network", "PrivateSubnetCidr") == "10.0.128.0/20"
    assert default("network", "PublicSubnetName") == "SBW_Project-subnet-public1-ap-southeast-1a"
    assert default("network", "PrivateSubnetName") == "SBW_Project-subnet-private1-ap-southeast-1a"
    for subnet in ("PublicSubnet", "PrivateSubnet"):
        p = props("network", subnet)
        assert plain(p["AvailabilityZone"]) == {"Fn::Sub": "${AWS::Region}a"}
        assert p["MapPublicIpOnLaunch"] is False
    vpc = props("network", "Vpc")
    assert vpc["EnableDnsSupport"] is True and vpc["EnableDnsHostnames"] is True


def test_routes_public_default_to_igw_private_none() -> None:
    routes = resources("network", "AWS::EC2::Route")
    assert list(routes) == ["PublicDefaultRoute"]
    route = routes["PublicDefaultRoute"]["Properties"]
    assert plain(route["RouteTableId"]) == {"Ref": "PublicRouteTable"}
    assert route["DestinationCidrBlock"] == "0.0.0.0/0"
    assert plain(route["GatewayId"]) == {"Ref": "InternetGateway"}
    # The private table's only route besides local is the S3 gateway endpoint's prefix list.
    gateway = props("network", "S3GatewayEndpoint")
    assert gateway["VpcEndpointType"] == "Gateway"
    assert plain(gateway["RouteTableIds"]) == [{"Ref": "PrivateRouteTable"}]
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
        plain(e["Properties"]["ServiceName"])["Fn::Sub"]: e["Properties"]
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
        assert plain(p["SubnetIds"]) == [{"Ref": "PrivateSubnet"}]
        assert plain(p["SecurityGroupIds"]) == [{"Ref": "SgVpcInterfaceEndpointSsm"}]


def test_gateway_endpoint_policy_allows_only_project_and_ssm_agent_buckets() -> None:
    statements = props("network", "S3GatewayEndpoint")["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    arns = [plain(r)["Fn::Sub"] for s in statements for r in s["Resource"]]
    buckets = {re.match(r"arn:\$\{AWS::Partition\}:s3:::([^/]+)", a).group(1) for a in arns}
    assert buckets == {
        "${RawBucketName}",
        "${ArtifactsBucketName}",
        "${SsmTransferBucketName}",
        # The dwh host's pgBackRest repository (issue 16 §2): the private side reaches S3 only through here.
        "${BackupBucketName}",
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
    # The dwh host's pgBackRest (list, get, put, delete) passes; the endpoint gets the name the storage
    # stack creates the bucket with.
    objects = next(s for s in statements if s["Sid"] == "ProjectBucketsObjects")
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert "arn:${AWS::Partition}:s3:::${BackupBucketName}/*" in [
        plain(r)["Fn::Sub"] for r in objects["Resource"]
    ]
    listing = next(s for s in statements if s["Sid"] == "ProjectBucketsList")
    assert "arn:${AWS::Partition}:s3:::${BackupBucketName}" in [
        plain(r)["Fn::Sub"] for r in listing["Resource"]
    ]
    assert (
        deploy_task("network")["template_parameters"]["BackupBucketName"]
        == deploy_task("storage")["template_parameters"]["BackupBucketName"]
        == "{{ sbw_stacks_buckets.backup }}"
    )


def _rules(logical_id: str, kind: str) -> set[tuple[Any, ...]]:
    """Every rule of a group, inline and as separate resources: (proto, from, to, source/destination)."""
    found: set[tuple[Any, ...]] = set()
    inline = props("network", logical_id).get(f"SecurityGroup{kind}", [])
    standalone = [
        r["Properties"]
        for r in resources("network", f"AWS::EC2::SecurityGroup{kind}").values()
        if plain(r["Properties"]["GroupId"]) == {"Ref": logical_id}
    ]
    for rule in [*inline, *standalone]:
        peer_keys = (
            "CidrIp",
            "SourceSecurityGroupId",
            "DestinationSecurityGroupId",
            "DestinationPrefixListId",
        )
        peer = next(plain(rule[k]) for k in peer_keys if k in rule)
        peer = peer.get("Ref", peer) if isinstance(peer, dict) else peer
        found.add((str(rule["IpProtocol"]), rule.get("FromPort"), rule.get("ToPort"), peer))
        assert rule.get("Description"), rule
    return found


def test_security_groups_exactly_the_seed_rules_plus_the_documented_extras() -> None:
    names = {
        plain(r["Properties"]["GroupName"]) for r in resources("network", "AWS::EC2::SecurityGroup").values()
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
