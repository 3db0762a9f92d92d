"""What the CloudFormation template suites (tests/test_cfn_*.py) share: the parsed templates, their
resources and properties, IAM evaluation of a role's statements, and the tasks of playbooks/stacks.yml.

Parsed with cfn-lint's decoder (intrinsic functions as plain mappings); `plain` turns its node classes
into dicts and lists so values compare with literals.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cfnlint.decode import cfn_yaml

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


def plain(value: Any) -> Any:
    """Strip cfn-lint's node classes so values compare as plain dicts/lists/strings."""
    return json.loads(json.dumps(value))


def role_statements(name: str, role: str) -> list[dict[str, Any]]:
    """Every statement that applies to a role of the template: its inline policies and the managed
    policies of the same template it attaches (an AWS-managed ARN fails the test: it cannot be read here)."""
    p = props(name, role)
    statements = [s for policy in p.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]
    for arn in plain(p.get("ManagedPolicyArns", [])):
        assert isinstance(arn, dict) and set(arn) == {"Ref"}, (
            f"{role} attaches a policy not in the template: {arn}"
        )
        statements += props(name, arn["Ref"])["PolicyDocument"]["Statement"]
    return statements


def glob_match(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
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
        resources = plain(s["Resource"])
        resources = resources if isinstance(resources, list) else [resources]
        return any(glob_match(a, action) for a in actions(s)) and any(
            glob_match(arn(r), resource) for r in resources
        )

    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def resolve_sub(value: Any) -> str:
    """A Fn::Sub of the ingest-policy.json style back into its template string (variables substituted
    by their own placeholder names, which is what the JSON file holds)."""
    value = plain(value)
    if isinstance(value, str):
        return value
    template_string, variables = value["Fn::Sub"]
    for name, ref in variables.items():
        assert ref == {"Ref": {"RawBucket": "RawBucketName", "IngestFunctionName": "FunctionName"}[name]}
    return template_string


def stack_tasks() -> list[dict[str, Any]]:
    plays = yaml.safe_load((REPO / "playbooks" / "stacks.yml").read_text())
    found: list[dict[str, Any]] = []

    def walk(tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            found.append(task)
            walk(task.get("block", []) + task.get("rescue", []) + task.get("always", []))

    for play in plays:
        walk(play.get("tasks", []))
    return found


def deploy_task(stack: str) -> dict[str, Any]:
    (task,) = [
        t["amazon.aws.cloudformation"]
        for t in stack_tasks()
        if "amazon.aws.cloudformation" in t
        and t["amazon.aws.cloudformation"]["stack_name"].endswith(f"-{stack}")
    ]
    return task
