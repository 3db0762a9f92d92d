"""The hosts stack: Debian instances with IMDSv2, encrypted volumes and the SSM agent, one least-privilege
role per host, and the parameter key's policy.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.cfn_support import (
    REPO,
    actions,
    allows,
    default,
    glob_match,
    plain,
    props,
    resources,
    role_statements,
    stack_tasks,
    template,
)


def test_hosts_debian_imdsv2_encrypted_ssm_agent_and_tags() -> None:
    # Pinned to a dated release (issue 16): "latest" would replace both instances at the next update after
    # Debian publishes an AMI. The playbook's default is the template's.
    pinned = default("hosts", "DebianAmiParameter")
    assert re.fullmatch(r"/aws/service/debian/release/12/[0-9]{8}-[0-9]+/amd64", pinned)
    settle = next(t for t in stack_tasks() if "sbw_stacks" in t.get("ansible.builtin.set_fact", {}))
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
        assert plain(p["ImageId"]) == {"Fn::Sub": "{{resolve:ssm:${DebianAmiParameter}}}"}
        assert plain(p["LaunchTemplate"]["LaunchTemplateId"]) == {"Ref": "HostLaunchTemplate"}
        assert plain(p["SubnetId"]) == {"Ref": subnet}
        assert plain(p["SecurityGroupIds"]) == [{"Ref": sg}]
        assert all(m["Ebs"]["Encrypted"] is True for m in p["BlockDeviceMappings"])
        tags = {t["Key"]: plain(t["Value"]) for t in p["Tags"]}
        assert tags["Name"] == name and tags["Role"] == role and tags["Project"] == {"Ref": "ProjectName"}
        user_data = plain(p["UserData"])["Fn::Base64"]["Fn::Sub"]
        assert "amazon-ssm-${AWS::Region}/latest/debian_amd64/amazon-ssm-agent.deb" in user_data
        assert "https://s3.${AWS::Region}.amazonaws.com/" in user_data
        assert "systemctl enable --now amazon-ssm-agent" in user_data
        assert "NetworkInterfaces" not in p
    # Only the public host gets a public address (Elastic IP); the private one none.
    (eip,) = resources("hosts", "AWS::EC2::EIP").values()
    assert plain(eip["Properties"]["InstanceId"]) == {"Ref": "WebDbInstance"}


# What the UserData may run on the Debian 12 AMI: bash's own words, coreutils and dpkg (minbase), systemctl
# (systemd) and curl (the AMI's EXTRAS class; tests/data/debian12_ec2_ami_packages.txt). No apt: the
# private host has no package source before Ansible configures one.
_BASH_WORDS = {"set", "for", "in", "do", "done", "if", "then", "fi", "break", "echo", "exit"}
_AMI_TOOLS = {"seq", "sleep", "dpkg", "systemctl", "curl"}


def _user_data(logical_id: str) -> str:
    return plain(props("hosts", logical_id)["UserData"])["Fn::Base64"]["Fn::Sub"]


def _commands(script: str) -> set[str]:
    """The command words of a simple bash script: each statement's first word, and $(...)'s."""
    words = set(re.findall(r"\$\((\w[\w-]*)", script))
    for line in script.splitlines():
        line = re.sub(r"\"[^\"]*\"|'[^']*'", '""', line).split(" #")[0].strip()  # no quoted text
        if not line or line.startswith("#"):
            continue
        for statement in re.split(r";|&&|\|\||\bthen\b|\bdo\b", line):
            tokens = statement.split()
            while tokens and tokens[0] in {"if", "then", "do", "!"}:
                tokens = tokens[1:]
            if tokens and not re.match(r"^\w+=", tokens[0]):
                words.add(tokens[0])
    return words


@pytest.mark.parametrize("logical_id", ["WebDbInstance", "DwhInstance"])
def test_user_data_runs_only_what_the_debian_ami_has(logical_id: str) -> None:
    ami = (REPO / "tests" / "data" / "debian12_ec2_ami_packages.txt").read_text().split()
    assert "curl" in ami
    assert _commands(_user_data(logical_id)) - _BASH_WORDS <= _AMI_TOOLS
    # The checker sees what a script would need: apt-get and python3 -m pip are not AMI tools here.
    script = "apt-get install -y x\nif python3 -m pip x; then true; fi"
    assert _commands(script) - _BASH_WORDS == {"apt-get", "python3", "true"}


def test_the_private_hosts_user_data_reaches_only_s3() -> None:
    """DwhInstance has no route out but the S3 gateway endpoint: every URL it fetches is regional S3."""
    urls = re.findall(r"https?://[^\s\"']+", _user_data("DwhInstance"))
    assert urls and all(u.startswith("https://s3.${AWS::Region}.amazonaws.com/") for u in urls)


def test_one_role_per_host_without_the_managed_ssm_core_policy() -> None:
    profiles = {
        lid: plain(props("hosts", lid)["IamInstanceProfile"]) for lid in ("WebDbInstance", "DwhInstance")
    }
    assert profiles == {
        "WebDbInstance": {"Ref": "WebDbInstanceProfile"},
        "DwhInstance": {"Ref": "DwhInstanceProfile"},
    }
    assert plain(props("hosts", "WebDbInstanceProfile")["Roles"]) == [{"Ref": "WebDbRole"}]
    assert plain(props("hosts", "DwhInstanceProfile")["Roles"]) == [{"Ref": "DwhRole"}]
    assert set(resources("hosts", "AWS::IAM::Role")) == {"WebDbRole", "DwhRole"}
    for role in ("WebDbRole", "DwhRole"):
        assert plain(props("hosts", role)["ManagedPolicyArns"]) == [{"Ref": "SsmManagedInstancePolicy"}]


def _project_parameters() -> list[str]:
    """Every /sbw/* parameter the playbooks name (group_vars sbw_ssm_parameters), the pgBackRest
    passphrases among them, plus one the list does not name (the deny covers the whole path)."""
    group_vars = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all" / "main.yml").read_text())
    names = sorted(group_vars["sbw_ssm_parameters"].values())
    assert {"/sbw/webdb/pgbackrest_cipher_pass", "/sbw/dwh/pgbackrest_cipher_pass"} <= set(names)
    assert all(n.startswith("/sbw/") for n in names)
    return [*names, "/sbw/postgres/superuser"]


@pytest.mark.parametrize("role", ["WebDbRole", "DwhRole"])
def test_no_host_reads_project_parameters_or_decrypts(role: str) -> None:
    """Ansible reads the passwords (and the backup passphrases) on the controller; a host role reads no
    /sbw/* parameter at all."""
    statements = role_statements("hosts", role)
    for action in (
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
    ):
        for parameter in _project_parameters():
            resource = f"arn:aws:ssm:ap-southeast-1:123456789012:parameter{parameter}"
            assert not allows(statements, action, resource), (role, action, parameter)
    assert not any(a.startswith("kms:") for s in statements if s["Effect"] == "Allow" for a in actions(s))
    # The agent itself still works: it registers and opens Session Manager channels.
    assert allows(statements, "ssm:UpdateInstanceInformation", "*")
    assert allows(statements, "ssmmessages:OpenDataChannel", "*")
    assert allows(statements, "ec2messages:GetMessages", "*")


def test_webdb_role_cannot_read_the_warehouse_parameters() -> None:
    statements = role_statements("hosts", "WebDbRole")
    arn = "arn:aws:ssm:ap-southeast-1:123456789012:parameter/sbw/dwh/etl_password"
    assert not allows(statements, "ssm:GetParameter", arn)
    # Not by luck of a missing allow: an explicit deny covers /sbw/* should a broad grant come back.
    assert not allows(
        [*statements, {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}], "ssm:GetParameter", arn
    )


def test_only_the_dwh_host_reads_the_repository_and_webdb_s3_is_its_backups_only() -> None:
    repo = "arn:aws:s3:::${ArtifactsBucketName}/${RepoPrefix}/dists/bookworm/InRelease"
    assert allows(role_statements("hosts", "DwhRole"), "s3:GetObject", repo)
    assert not allows(role_statements("hosts", "WebDbRole"), "s3:GetObject", repo)
    # WebDB's only S3 grants are on the backup bucket (below).
    for statement in role_statements("hosts", "WebDbRole"):
        if any(a.startswith("s3:") for a in actions(statement)):
            resource = plain(statement["Resource"])["Fn::Sub"]
            assert resource.startswith("arn:${AWS::Partition}:s3:::${BackupBucketName}"), statement


# --- the backup bucket (issue 16 §2): each host its own pgBackRest repository prefix -------------------

BACKUP = "arn:aws:s3:::${BackupBucketName}"
BACKUP_PREFIXES = {"WebDbRole": "webdb", "DwhRole": "dwh"}


def _s3_statements(role: str) -> list[dict]:
    return [s for s in role_statements("hosts", role) if any(a.startswith("s3:") for a in actions(s))]


def _lists(statements: list[dict], prefix: str) -> bool:
    """s3:ListBucket on the backup bucket for a request with this s3:prefix (the StringLike condition
    evaluated; a statement without a condition lists any prefix)."""
    for s in statements:
        if s["Effect"] != "Allow" or not allows([s], "s3:ListBucket", BACKUP):
            continue
        condition = plain(s.get("Condition", {}))
        if not condition:
            return True
        patterns = condition["StringLike"]["s3:prefix"]
        if any(glob_match(p, prefix) for p in patterns):
            return True
    return False


@pytest.mark.parametrize("role", sorted(BACKUP_PREFIXES))
def test_each_host_reads_and_writes_only_its_own_backup_prefix(role: str) -> None:
    own = BACKUP_PREFIXES[role]
    (other,) = set(BACKUP_PREFIXES.values()) - {own}
    statements = role_statements("hosts", role)
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        # pgBackRest's files under repo1-path=/<host>: backup info, backups, WAL archive.
        for key in ("backup/main/backup.info", "archive/main/15-1/0000000100000000/x.gz"):
            assert allows(statements, action, f"{BACKUP}/{own}/{key}"), (role, action, key)
            assert not allows(statements, action, f"{BACKUP}/{other}/{key}"), (role, action, key)
        assert not allows(statements, action, f"{BACKUP}/{own}"), (role, action)  # not the prefix's neighbour
        assert not allows(statements, action, f"{BACKUP}/{own}-other/x"), (role, action)
        assert not allows(statements, action, f"{BACKUP}/x"), (role, action)
    assert _lists(statements, f"{own}/backup/main/") and _lists(statements, own)
    assert not _lists(statements, f"{other}/backup/main/") and not _lists(statements, other)
    assert not _lists(statements, "") and not _lists(statements, f"{own}-other/")
    # Nothing else on the bucket: no bucket-level writes, no policy or versioning changes, no version reads.
    for action in (
        "s3:DeleteBucket",
        "s3:PutBucketPolicy",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketVersioning",
        "s3:GetObjectVersion",
        "s3:DeleteObjectVersion",
    ):
        assert not allows(statements, action, BACKUP), (role, action)
        assert not allows(statements, action, f"{BACKUP}/{own}/x"), (role, action)


@pytest.mark.parametrize("role", sorted(BACKUP_PREFIXES))
def test_the_backup_grants_are_exactly_list_get_put_delete(role: str) -> None:
    """Least privilege: the backup statements of a role are these two, no other S3 action on the bucket."""
    own = BACKUP_PREFIXES[role]
    backup = [
        plain(s)
        for s in _s3_statements(role)
        if plain(s["Resource"])["Fn::Sub"].startswith("arn:${AWS::Partition}:s3:::${BackupBucketName}")
    ]
    assert sorted((s["Sid"], tuple(sorted(actions(s)))) for s in backup) == [
        ("ListOwnPrefix", ("s3:ListBucket",)),
        ("ReadWriteOwnPrefix", ("s3:DeleteObject", "s3:GetObject", "s3:PutObject")),
    ]
    listing = next(s for s in backup if s["Sid"] == "ListOwnPrefix")
    assert listing["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BackupBucketName}"}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{own}/*", own]}}
    objects = next(s for s in backup if s["Sid"] == "ReadWriteOwnPrefix")
    assert objects["Resource"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{BackupBucketName}}/{own}/*"}


def test_the_hosts_get_the_backup_bucket_from_the_storage_stack() -> None:
    params = next(
        t["amazon.aws.cloudformation"]["template_parameters"]
        for t in stack_tasks()
        if t.get("amazon.aws.cloudformation", {}).get("stack_name", "").endswith("-hosts")
    )
    assert params["BackupBucketName"] == "{{ sbw_stacks_out.storage.BackupBucketName }}"
    assert default("hosts", "BackupBucketName") == "clickstream-s3-backups"
    facts = next(t for t in stack_tasks() if t.get("name") == "Keep the facts the host plays need")
    assert facts["ansible.builtin.set_fact"]["sbw_stacks_facts"]["sbw_backup_bucket"] == (
        "{{ sbw_stacks_out.storage.BackupBucketName }}"
    )


def test_parameter_key_policy_names_the_etl_the_operators_and_root_for_administration() -> None:
    key = props("etl", "ParameterKey")
    assert key["EnableKeyRotation"] is True
    # A JSON string under !Sub (moto needs a string): its placeholders sit inside JSON strings.
    document = json.loads(plain(key["KeyPolicy"])["Fn::Sub"])
    statements = {s["Sid"]: s for s in document["Statement"]}
    principals = {sid: s["Principal"]["AWS"] for sid, s in statements.items()}
    assert principals == {
        "AccountRootAdministersOnly": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root",
        "EtlDecryptsThroughSsm": "${FunctionRole.Arn}",
        "OperatorsUseThroughSsm": "${OperatorPrincipalArn}",
    }
    assert all(s["Effect"] == "Allow" for s in statements.values())
    # The root may administer, never use the key: no other principal of the account decrypts through IAM.
    root = actions(statements["AccountRootAdministersOnly"])
    for use in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:CreateGrant"):
        # (kms:Create* would include CreateGrant: a grant to oneself is a way to decrypt.)
        assert not any(glob_match(a, use) for a in root), use
    assert actions(statements["EtlDecryptsThroughSsm"]) == ["kms:Decrypt"]
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
    facts = next(t for t in stack_tasks() if t.get("name") == "Keep the facts the host plays need")
    assert facts["ansible.builtin.set_fact"]["sbw_stacks_facts"]["sbw_ssm_kms_key_id"] == (
        "{{ sbw_stacks_out.etl.ParameterKeyId }}"
    )


# --- the PostgreSQL data volumes (issue 16 §1) -----------------------------------------------------

HOSTS = {"WebDb": "webdb", "Dwh": "dwh"}


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_each_host_has_an_encrypted_gp3_data_volume_snapshotted_on_delete_and_replace(host: str) -> None:
    volume = template("hosts")["Resources"][f"{host}DataVolume"]
    assert volume["Type"] == "AWS::EC2::Volume"
    assert (volume["DeletionPolicy"], volume["UpdateReplacePolicy"]) == ("Snapshot", "Snapshot")
    p = plain(volume["Properties"])
    assert p["Encrypted"] is True and p["VolumeType"] == "gp3"
    # Its size is the per-host parameter (an in-place ModifyVolume); the root volume's is fixed, because a
    # new root size replaces the instance.
    assert p["Size"] == {"Ref": f"{host}VolumeGiB"}
    (root,) = props("hosts", f"{host}Instance")["BlockDeviceMappings"]
    assert isinstance(root["Ebs"]["VolumeSize"], int) and root["Ebs"]["DeleteOnTermination"] is True
    # In the instances' zone, taken from the network stack (the subnets' zone), not from the instance.
    assert p["AvailabilityZone"] == {"Ref": "AvailabilityZone"}
    tags = {t["Key"]: t["Value"] for t in p["Tags"]}
    assert tags["Role"] == HOSTS[host]


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_data_volume_is_attached_and_its_id_tagged_on_the_instance(host: str) -> None:
    attachment = template("hosts")["Resources"][f"{host}DataVolumeAttachment"]
    assert attachment["Type"] == "AWS::EC2::VolumeAttachment"
    assert plain(attachment["Properties"]["InstanceId"]) == {"Ref": f"{host}Instance"}
    assert plain(attachment["Properties"]["VolumeId"]) == {"Ref": f"{host}DataVolume"}
    # Detachable on purpose (step one of moving to a new AMI), attached by default.
    assert attachment["Condition"] == "AttachDataVolumes"
    assert plain(template("hosts")["Conditions"]["AttachDataVolumes"]) == {
        "Fn::Equals": [{"Ref": "DataVolumesAttached"}, "true"]
    }
    assert default("hosts", "DataVolumesAttached") == "true"
    tags = {t["Key"]: plain(t["Value"]) for t in props("hosts", f"{host}Instance")["Tags"]}
    assert tags["DataVolumeId"] == {"Ref": f"{host}DataVolume"}


def test_the_volume_id_reaches_the_postgresql_role_through_the_inventory() -> None:
    """One source: the instance's DataVolumeId tag, which inventory/aws_ec2.yml composes into the role."""
    compose = yaml.safe_load((REPO / "inventory" / "aws_ec2.yml").read_text())["compose"]
    assert "aws_tags.DataVolumeId | default('')" in compose["postgresql_data_volume_id"]
    specs = yaml.safe_load((REPO / "roles" / "postgresql" / "meta" / "argument_specs.yml").read_text())
    assert "postgresql_data_volume_id" in specs["argument_specs"]["main"]["options"]
    # The zone the volumes are created in is the subnets' own.
    network = template("network")
    zone = plain(network["Outputs"]["AvailabilityZone"]["Value"])
    for subnet in ("PublicSubnet", "PrivateSubnet"):
        assert plain(network["Resources"][subnet]["Properties"]["AvailabilityZone"]) == zone
    params = next(
        t["amazon.aws.cloudformation"]["template_parameters"]
        for t in stack_tasks()
        if t.get("amazon.aws.cloudformation", {}).get("stack_name", "").endswith("-hosts")
    )
    assert params["AvailabilityZone"] == "{{ sbw_stacks_out.network.AvailabilityZone }}"
    assert params["DataVolumesAttached"] == "{{ sbw_stacks.data_volumes_attached | string | lower }}"
    assert params["DwhVolumeGiB"] == "{{ sbw_stacks.dwh_volume_gib }}"
