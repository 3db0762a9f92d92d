"""The storage stack: private, encrypted, TLS-only buckets with their lifecycles, and the repository prefix
readable only through the gateway endpoint.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

from tests.cfn_support import (
    default,
    plain,
    props,
    resources,
)


def test_buckets_private_encrypted_tls_only_with_lifecycle() -> None:
    buckets = resources("storage", "AWS::S3::Bucket")
    assert set(buckets) == {"RawBucket", "AssetsBucket", "ArtifactsBucket", "SsmTransferBucket"}
    assert default("storage", "RawBucketName") == "clickstream-s3-ingest"
    assert default("storage", "AssetsBucketName") == "clickstream-s3-sbw"
    policies = {
        plain(p["Properties"]["Bucket"])["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
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
        assert plain(deny["Condition"]) == {"Bool": {"aws:SecureTransport": "false"}}


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
    assert plain(allow["Resource"]) == {"Fn::Sub": "${ArtifactsBucket.Arn}/${RepoPrefix}/*"}
    assert plain(allow["Condition"]) == {"StringEquals": {"aws:sourceVpce": {"Ref": "S3GatewayEndpointId"}}}
    for logical_id in ("RawBucketPolicy", "AssetsBucketPolicy", "SsmTransferBucketPolicy"):
        assert all(s["Effect"] == "Deny" for s in props("storage", logical_id)["PolicyDocument"]["Statement"])
