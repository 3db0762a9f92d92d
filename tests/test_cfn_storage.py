"""The storage stack: private, encrypted, TLS-only buckets with their lifecycles, the repository prefix
readable only through the gateway endpoint, and the backup bucket of pgBackRest (issue 16 §2).

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

import re

import pytest

from tests.cfn_support import (
    default,
    deploy_task,
    plain,
    props,
    resources,
    template,
)


def test_buckets_private_encrypted_tls_only_with_lifecycle() -> None:
    buckets = resources("storage", "AWS::S3::Bucket")
    assert set(buckets) == {
        "RawBucket",
        "AssetsBucket",
        "ArtifactsBucket",
        "SsmTransferBucket",
        "BackupBucket",
    }
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
        assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}], logical_id
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
    for logical_id in (
        "RawBucketPolicy",
        "AssetsBucketPolicy",
        "SsmTransferBucketPolicy",
        "BackupBucketPolicy",
    ):
        assert all(s["Effect"] == "Deny" for s in props("storage", logical_id)["PolicyDocument"]["Statement"])


# --- the backup bucket (issue 16 §2: pgBackRest's repositories of both clusters) -----------------------


def test_backup_bucket_is_named_like_the_others_and_retained() -> None:
    bucket = template("storage")["Resources"]["BackupBucket"]
    # It holds the system of record's backups: kept when the stack is deleted or the bucket replaced (the
    # stack policy of playbooks/stacks.yml denies both for every AWS::S3::Bucket: test_cfn_common).
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert plain(bucket["Properties"]["BucketName"]) == {"Ref": "BackupBucketName"}
    assert default("storage", "BackupBucketName") == "clickstream-s3-backups"
    params = deploy_task("storage")["template_parameters"]
    assert params["BackupBucketName"] == "{{ sbw_stacks_buckets.backup }}"
    assert params["BackupRetentionDays"] == "{{ sbw_stacks.backup_retention_days }}"
    output = template("storage")["Outputs"]["BackupBucketName"]
    assert plain(output["Value"]) == {"Ref": "BackupBucket"}


def test_backup_bucket_versioned_encrypted_private_tls_only() -> None:
    p = props("storage", "BackupBucket")
    assert p["VersioningConfiguration"] == {"Status": "Enabled"}
    (sse,) = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert p["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    policy = props("storage", "BackupBucketPolicy")
    assert plain(policy["Bucket"]) == {"Ref": "BackupBucket"}
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert (deny["Sid"], deny["Effect"], deny["Principal"], deny["Action"]) == (
        "DenyInsecureTransport",
        "Deny",
        "*",
        "s3:*",
    )
    assert plain(deny["Resource"]) == [
        {"Fn::GetAtt": ["BackupBucket", "Arn"]},
        {"Fn::Sub": "${BackupBucket.Arn}/*"},
    ]
    assert plain(deny["Condition"]) == {"Bool": {"aws:SecureTransport": "false"}}


def test_backup_lifecycle_expires_only_noncurrent_versions_after_the_retention() -> None:
    rules = {r["Id"]: plain(r) for r in props("storage", "BackupBucket")["LifecycleConfiguration"]["Rules"]}
    assert all(r["Status"] == "Enabled" for r in rules.values())
    assert rules["expire-noncurrent"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": {"Ref": "BackupRetentionDays"}
    }
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    # pgBackRest expires its own backups (repo1-retention-full): no rule expires a current object, on any
    # prefix, nor moves one to another storage class (a restore must read at once).
    for rule in rules.values():
        assert not {"ExpirationInDays", "ExpirationDate", "Transitions", "Transition"} & set(rule), rule
    assert default("storage", "BackupRetentionDays") == "35"


@pytest.mark.parametrize(
    ("days", "valid"), [("35", True), ("1", True), ("0", False), ("", False), ("7d", False)]
)
def test_backup_retention_days_is_a_positive_whole_number(days: str, valid: bool) -> None:
    pattern = template("storage")["Parameters"]["BackupRetentionDays"]["AllowedPattern"]
    assert (re.fullmatch(pattern.strip("^$"), days) is not None) == valid
