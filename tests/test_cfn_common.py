"""What holds for every template, the data-protection policies across the stacks, and playbooks/stacks.yml
against the templates (every parameter passed, every AWS call with the endpoint override).

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.cfn_support import (
    CFN,
    REPO,
    STACKS,
    deploy_task,
    plain,
    stack_tasks,
    template,
)

# --- every template -----------------------------------------------------------------------------


def test_all_eight_stacks_exist_and_nothing_else() -> None:
    assert sorted(p.stem for p in CFN.glob("*.yaml")) == sorted(STACKS)


@pytest.mark.parametrize("name", STACKS)
def test_outputs_are_exported_under_the_stack_name(name: str) -> None:
    outputs = template(name)["Outputs"]
    assert outputs
    for key, output in outputs.items():
        assert plain(output["Export"]["Name"]) == {"Fn::Sub": f"${{AWS::StackName}}-{key}"}, key


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


# --- playbooks/stacks.yml against the templates ----------------------------------------------------


def test_stacks_playbook_passes_every_template_parameter() -> None:
    """All parameters explicit: otherwise a re-run counts as an update (moto) or drifts from defaults."""
    deployed = []
    for task in stack_tasks():
        module = task.get("amazon.aws.cloudformation")
        if not module:
            continue
        name = re.search(r"/(\w+)\.yaml", module["template_body"]).group(1)
        deployed.append(name)
        assert set(module["template_parameters"]) == set(template(name)["Parameters"]), name
        assert module["stack_name"] == f"{{{{ sbw_stacks.prefix }}}}-{name}"
    assert deployed == list(STACKS)


def test_every_aws_call_of_the_playbook_takes_the_endpoint_override() -> None:
    calls = [(t["name"], m) for t in stack_tasks() for k, m in t.items() if k.startswith("amazon.aws.")]
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
        ("storage", "BackupBucket"),
        ("hosts", "WebDbInstance"),
        ("hosts", "DwhInstance"),
        ("auth", "UserPool"),
        ("etl", "ParameterKey"),
    ],
)
def test_what_holds_data_is_retained(stack: str, logical_id: str) -> None:
    resource = template(stack)["Resources"][logical_id]
    assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")


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
        task = deploy_task(stack)
        assert task["termination_protection"] is True, stack
        assert task["stack_policy_body"] == "{{ sbw_stacks_policy }}", stack
        assert task["stack_policy_on_update_body"] == "{{ __sbw_stacks_policy_during_update }}", stack
    assert deploy_task("auth")["termination_protection"] is True
    # The override is explicit, for one run: without sbw_stacks_allow_replace nothing is passed.
    assert play_vars["__sbw_stacks_policy_during_update"] == (
        "{{ sbw_stacks_policy_override if (sbw_stacks_allow_replace | default(false) | bool) else omit }}"
    )
    # Every type the policy protects is one the data stacks hold.
    held = {r["Type"] for s in ("storage", "hosts") for r in template(s)["Resources"].values()}
    assert {"AWS::EC2::Instance", "AWS::EC2::Volume", "AWS::S3::Bucket"} <= held
