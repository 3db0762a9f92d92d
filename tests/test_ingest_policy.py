"""Deployment artefacts next to the ingest code: the IAM policy (exactly s3:PutObject on events/* and
failed/* plus its logs) and the Lambda runtime requirements (pinned as in requirements.lock)."""

from __future__ import annotations

import json
from pathlib import Path

from sbw_clickstream import keys

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "lambda_src" / "sbw_clickstream" / "iam" / "ingest-policy.json"


def test_policy_is_least_privilege() -> None:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    grants: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for action in actions:
            assert "*" not in action
            grants.setdefault(action, set()).update(resources)
    assert set(grants) == {"s3:PutObject", "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert grants["s3:PutObject"] == {
        f"arn:aws:s3:::${{RawBucket}}/{keys.EVENTS_PREFIX}*",
        f"arn:aws:s3:::${{RawBucket}}/{keys.FAILED_PREFIX}*",
    }
    for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"):
        (resource,) = grants[action]
        assert resource.startswith("arn:aws:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            pins[name.lower().replace("_", "-").replace(".", "-")] = version
    return pins


def test_lambda_requirements_are_minimal_and_pinned_like_the_lock() -> None:
    runtime = _pins(REPO / "lambda_src" / "requirements-lambda.txt")
    lock = _pins(REPO / "requirements.lock")
    assert {"aws-lambda-powertools", "fastjsonschema", "jsonschema", "psycopg2-binary"} <= set(runtime)
    assert not {"boto3", "botocore", "pytest", "moto", "hypothesis", "schemathesis"} & set(runtime)
    for name, version in runtime.items():
        assert lock.get(name) == version, (
            f"{name}=={version} differs from requirements.lock ({lock.get(name)})"
        )
