"""playbooks/teardown.yml against a real moto server with every stack deployed by playbooks/stacks.yml.

Refuses without the account id and with a wrong one (nothing deleted); a check-mode run changes
nothing; the default run deletes every stack, keeps exactly what it reports (retained buckets, the
pgBackRest backup bucket among them, the /sbw/* parameters and their key, a final snapshot per host volume)
and a second run is changed=0; the
purge run leaves no bucket, parameter, snapshot, stack or running instance, and the key pending deletion.
moto stores termination protection without enforcing it and has no UpdateTerminationProtection (see
tests/test_stacks_moto.py); the module tolerates that gap against an endpoint override only.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sbw_ops.moto_server import MotoServer, start_moto_server

from tests.ansible_support import play_recap
from tests.test_stacks_moto import REGION, _env, run_stacks

pytestmark = [pytest.mark.xdist_group("teardown_moto"), pytest.mark.slow, pytest.mark.moto]

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"  # moto's


def client(endpoint_url: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def run_teardown(endpoint_url: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(workdir / "localhost.yml"),
            str(REPO / "playbooks" / "teardown.yml"),
            "-e",
            f"sbw_aws_endpoint_url={endpoint_url}",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        check=False,
        timeout=900,
    )


def account_state(endpoint_url: str) -> dict[str, Any]:
    """Everything of the platform that moto holds."""
    cfn, s3, ssm, ec2, kms = (client(endpoint_url, s) for s in ("cloudformation", "s3", "ssm", "ec2", "kms"))
    running = [
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} | _VOLUMES
    described = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] for k in kms.list_keys()["Keys"]]
    # Customer keys only; moto models AWS's aws/ebs key (made for the encrypted root volumes) as one.
    keys = {
        k["KeyId"]: k["KeyState"]
        for k in described
        if k["KeyManager"] == "CUSTOMER" and not k.get("Description", "").startswith("Default master key")
    }
    return {
        "stacks": sorted(s["StackName"] for s in cfn.describe_stacks()["Stacks"]),
        "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
        "parameters": sorted(p["Name"] for p in ssm.describe_parameters()["Parameters"]),
        # moto's own AMIs come with snapshots owned by the account: those with a volume of ours only.
        "snapshots": sorted(
            s["SnapshotId"]
            for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
            if s["VolumeId"] in volumes
        ),
        "instances": running,
        "keys": keys,
    }


# Every volume the deployment had (moto drops a terminated instance's root volume from DescribeVolumes).
_VOLUMES: set[str] = set()


def report(run: subprocess.CompletedProcess[str]) -> str:
    """The playbook's closing message (kept items and their cost), whitespace collapsed."""
    tail = run.stdout.split("TASK [Say what was kept and what it costs a month]")[-1].split("PLAY RECAP")[0]
    assert "msg:" in tail, run.stdout[-4000:]
    return " ".join(tail.split("msg:", 1)[1].split())


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start_moto_server(tmp_path_factory.mktemp("teardown-moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployed(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    workdir = tmp_path_factory.mktemp("teardown")
    run = run_stacks(moto.endpoint_url, workdir)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    endpoint = moto.endpoint_url
    facts = (workdir / "stacks-facts.yml").read_text()
    key_id = re.search(r"sbw_ssm_kms_key_id: (\S+)", facts).group(1)
    raw = re.search(r"sbw_raw_bucket: (\S+)", facts).group(1)
    backups = re.search(r"sbw_backup_bucket: (\S+)", facts).group(1)
    # Data as the platform holds it: a secret under the key, raw events with an old version.
    ssm, s3 = client(endpoint, "ssm"), client(endpoint, "s3")
    ssm.put_parameter(Name="/sbw/dwh/etl_password", Value="x" * 24, Type="SecureString", KeyId=key_id)
    ssm.put_parameter(Name="/sbw/webdb/app_password", Value="y" * 24, Type="SecureString", KeyId=key_id)
    s3.put_bucket_versioning(Bucket=raw, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=raw, Key="events/a.ndjson", Body=b"1" * 1000)
    s3.put_object(Bucket=raw, Key="events/a.ndjson", Body=b"2" * 1000)
    # pgBackRest's repositories: a rewritten backup.info (an old version) under webdb/, a WAL segment of dwh.
    s3.put_bucket_versioning(Bucket=backups, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=backups, Key="webdb/backup/main/backup.info", Body=b"a" * 500)
    s3.put_object(Bucket=backups, Key="webdb/backup/main/backup.info", Body=b"b" * 500)
    s3.put_object(Bucket=backups, Key="dwh/archive/main/15-1/0000000100000000/x.gz", Body=b"c" * 1000)
    return endpoint, workdir


def test_refuses_without_or_with_a_wrong_account(deployed: tuple[str, Path]) -> None:
    endpoint, workdir = deployed
    before = account_state(endpoint)
    missing = run_teardown(endpoint, workdir)
    assert missing.returncode != 0
    assert "sbw_confirm_teardown=<account id>" in missing.stdout
    assert "aws sts get-caller-identity --query Account --output text" in missing.stdout
    wrong = run_teardown(endpoint, workdir, "-e", "sbw_confirm_teardown=210987654321")
    assert wrong.returncode != 0
    assert "is not the account these credentials reach (123456789012" in wrong.stdout
    assert "Delete the stacks" not in wrong.stdout  # failed before the module ran
    assert account_state(endpoint) == before


def test_check_mode_plans_and_changes_nothing(deployed: tuple[str, Path]) -> None:
    endpoint, workdir = deployed
    before = account_state(endpoint)
    run = run_teardown(endpoint, workdir, "-e", f"sbw_confirm_teardown={ACCOUNT}", "--check")
    assert run.returncode == 0, run.stdout[-4000:]
    assert play_recap(run.stdout)["localhost"]["changed"] == 1
    assert "check mode, would take" in run.stdout
    assert account_state(endpoint) == before


def test_default_keeps_only_what_it_reports_then_purge_leaves_nothing(deployed: tuple[str, Path]) -> None:
    endpoint, workdir = deployed
    _VOLUMES.update(v["VolumeId"] for v in client(endpoint, "ec2").describe_volumes()["Volumes"])
    before = account_state(endpoint)
    assert len(before["stacks"]) == 8 and len(before["instances"]) == 2
    raw = next(b for b in before["buckets"] if b.startswith("clickstream-s3-ingest-"))
    assets = next(b for b in before["buckets"] if b.startswith("clickstream-s3-sbw-"))
    backups = next(b for b in before["buckets"] if b.startswith("clickstream-s3-backups-"))

    first = run_teardown(endpoint, workdir, "-e", f"sbw_confirm_teardown={ACCOUNT}")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    assert play_recap(first.stdout)["localhost"]["changed"] == 1
    after = account_state(endpoint)
    # Every stack gone, both hosts terminated; left: the retained buckets (raw, assets, the backups), the
    # parameters, their key
    # (enabled: it decrypts them), one final snapshot per host root volume and one per PostgreSQL data volume
    # (its DeletionPolicy: Snapshot; moto ignores the policy, so there the teardown takes it).
    assert after["stacks"] == [] and after["instances"] == []
    assert after["buckets"] == sorted([raw, assets, backups])
    assert after["parameters"] == ["/sbw/dwh/etl_password", "/sbw/webdb/app_password"]
    assert len(after["snapshots"]) == 4
    enabled = [k for k, state in after["keys"].items() if state == "Enabled"]
    assert len(enabled) == 1
    # The report names exactly those, with their monthly cost.
    msg = report(first)
    for kept in (
        raw,
        assets,
        backups,
        *after["snapshots"],
        enabled[0],
        "/sbw/dwh/etl_password",
        "/sbw/webdb/app_password",
    ):
        assert kept in msg, kept
    assert "SBW_EC2_WebDB-final" in msg and "SBW_EC2_ShinyDWH-final" in msg
    # (moto drops a volume's tags: the data volumes' snapshots are named by their logical ids.)
    assert "WebDbDataVolume-final" in msg and "DwhDataVolume-final" in msg
    # The backup bucket is reported with every version's bytes (2,000) and its S3 Standard price.
    assert f"bucket | {backups} | 0.0 MiB (every version) | 0.0" in msg, msg
    # 10 + 10 GiB of root and 20 + 40 GiB of data volume snapshots at 0.05, 1 key at 1.00, 2,000 bytes each of
    # raw and backup versions, 0 for the parameters.
    assert "kept 9 item(s), 5.00 USD/month (delete them with -e sbw_teardown_purge=true)" in msg, msg
    # The raw bucket still holds both versions of its object.
    versions = client(endpoint, "s3").list_object_versions(Bucket=raw)["Versions"]
    assert len(versions) == 2
    # So does the backup bucket: both repositories, the old version of backup.info too.
    versions = client(endpoint, "s3").list_object_versions(Bucket=backups)["Versions"]
    assert sorted(v["Key"] for v in versions) == [
        "dwh/archive/main/15-1/0000000100000000/x.gz",
        "webdb/backup/main/backup.info",
        "webdb/backup/main/backup.info",
    ]

    second = run_teardown(endpoint, workdir, "-e", f"sbw_confirm_teardown={ACCOUNT}")
    assert second.returncode == 0, second.stdout[-4000:]
    assert play_recap(second.stdout)["localhost"]["changed"] == 0
    assert account_state(endpoint) == after
    assert "done: 0 step(s); kept 9 item(s), 5.00 USD/month" in report(second)

    purge = run_teardown(
        endpoint, workdir, "-e", f"sbw_confirm_teardown={ACCOUNT}", "-e", "sbw_teardown_purge=true"
    )
    assert purge.returncode == 0, purge.stdout[-6000:] + purge.stderr[-2000:]
    assert play_recap(purge.stdout)["localhost"]["changed"] == 1
    gone = account_state(endpoint)
    assert {k: v for k, v in gone.items() if k != "keys"} == {
        "stacks": [],
        "buckets": [],
        "parameters": [],
        "snapshots": [],
        "instances": [],
    }
    assert set(gone["keys"].values()) <= {"PendingDeletion"}
    assert "nothing kept." in report(purge)
    # The backup bucket went too, emptied of every version first (a bucket with versions does not delete).
    assert backups not in gone["buckets"]

    again = run_teardown(
        endpoint, workdir, "-e", f"sbw_confirm_teardown={ACCOUNT}", "-e", "sbw_teardown_purge=true"
    )
    assert again.returncode == 0, again.stdout[-4000:]
    assert play_recap(again.stdout)["localhost"]["changed"] == 0
    assert account_state(endpoint) == gone
