"""sbw_ops.teardown's handling of the PostgreSQL data volumes on AWS, where moto cannot show it.

CloudFormation snapshots a `DeletionPolicy: Snapshot` volume itself when it deletes the stack (moto ignores
the policy: tests/test_teardown.py sees the teardown take that snapshot there). On AWS the teardown must not
take its own copy of that volume before terminating the instance, and must tag CloudFormation's snapshot
afterwards so that the report and a purge find it. A fake EC2 client records the calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sbw_ops.teardown import SNAPSHOT_TAG, Teardown, TeardownError

ROOT, DATA = "vol-0000000000000root", "vol-0000000000000data"


class FakeEc2:
    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def describe_instances(self, **kwargs: Any) -> dict[str, Any]:
        instance = {
            "InstanceId": "i-1",
            "State": {"Name": "running"},
            "Tags": [{"Key": "Name", "Value": "SBW_EC2_WebDB"}],
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": ROOT}},
                {"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": DATA}},
            ],
        }
        return {"Reservations": [{"Instances": [instance]}]}

    def describe_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        (flt,) = kwargs["Filters"]
        if flt["Name"] == "volume-id":
            return {"Snapshots": [s for s in self.snapshots if s["VolumeId"] in flt["Values"]]}
        return {"Snapshots": []}  # no final snapshot tagged yet

    def create_tags(self, **kwargs: Any) -> None:
        self.calls.append(("create_tags", kwargs))


def _teardown(ec2: FakeEc2) -> Teardown:
    return Teardown(
        client=lambda service: ec2, prefix="sbw", buckets=[], user_pool_name="pool", check_mode=True
    )


def test_the_instance_snapshots_its_root_but_not_its_data_volume() -> None:
    teardown = _teardown(FakeEc2([]))
    teardown._instance("i-1", skip={DATA})
    assert teardown.result.actions == [
        f"final snapshot of SBW_EC2_WebDB's volume {ROOT}",
        "terminate instance SBW_EC2_WebDB (i-1)",
    ]


def test_cloudformations_newest_snapshot_of_the_volume_is_tagged_for_the_report_and_purge() -> None:
    ec2 = FakeEc2(
        [
            {"SnapshotId": "snap-old", "VolumeId": DATA, "StartTime": datetime(2026, 1, 1, tzinfo=UTC)},
            {"SnapshotId": "snap-new", "VolumeId": DATA, "StartTime": datetime(2026, 12, 3, tzinfo=UTC)},
            {"SnapshotId": "snap-other", "VolumeId": ROOT, "StartTime": datetime(2026, 12, 4, tzinfo=UTC)},
        ]
    )
    _teardown(ec2)._tag_policy_snapshot(DATA, "SBW_EC2_WebDB-data")
    ((call, kwargs),) = ec2.calls
    assert call == "create_tags" and kwargs["Resources"] == ["snap-new"]
    tags = {t["Key"]: t["Value"] for t in kwargs["Tags"]}
    assert tags == {"Name": "SBW_EC2_WebDB-data-final", SNAPSHOT_TAG: DATA, "sbw:stack-prefix": "sbw"}


def test_a_missing_policy_snapshot_is_an_error_naming_the_volume() -> None:
    with pytest.raises(TeardownError, match=f"no snapshot of SBW_EC2_WebDB-data \\({DATA}\\)"):
        _teardown(FakeEc2([]))._tag_policy_snapshot(DATA, "SBW_EC2_WebDB-data")
