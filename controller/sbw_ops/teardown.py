"""Take the platform's stacks down, keeping the data unless told to purge it (playbooks/teardown.yml).

The stacks go in the reverse of their deploy order (lake, auth, etl, ingest, hosts, storage, network,
alerts). What the templates retain (`DeletionPolicy: Retain`) decides what is data: by default the raw,
assets and backup (pgBackRest) buckets, the /sbw/* parameters with their KMS key and the user pool stay
(the backups need two of those parameters, their passphrases, to be restored); each retained
instance leaves a final snapshot of its root volume before it is terminated, so the network can go; each
PostgreSQL data volume (`DeletionPolicy: Snapshot`) leaves the snapshot CloudFormation takes as it deletes
the stack, tagged by the teardown like the others. The kept items come back with their monthly cost
(`sbw_ops.cost.kept_item`). With `purge`, everything goes: buckets emptied of every version and
deleted, snapshots, parameters, the user pool deleted, the key scheduled for deletion (AWS's minimum
wait, 7 days).

One implementation for AWS and the sandbox's moto server (`endpoint_url`); the only difference is
that moto has no UpdateTerminationProtection (it stores protection but never enforces it), which is
tolerated there and nowhere else. Every step first looks at what exists, so a second run does
nothing (`changed` false), and `check_mode` returns the same plan without calling anything that
changes the account. Called by the Ansible module `sbw.ops.teardown`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from sbw_ops import cost

# Deploy order of playbooks/stacks.yml; teardown walks it backwards.
STACKS = ("alerts", "network", "storage", "hosts", "ingest", "etl", "auth", "lake")
# Tags of the final snapshots: how a later run (report, purge) finds them again.
SNAPSHOT_TAG = "sbw:teardown-final-of"
KEY_DELETION_DAYS = 7


class TeardownError(RuntimeError):
    """A step failed; the message says which resource and why."""


@dataclass(frozen=True)
class Kept:
    """One thing the teardown left in the account on purpose, with what it costs."""

    kind: str
    name: str
    quantity: str
    monthly_usd: float


@dataclass
class Result:
    changed: bool = False
    actions: list[str] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)

    @property
    def monthly_usd(self) -> float:
        return round(sum(k.monthly_usd for k in self.kept), 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "actions": self.actions,
            "kept": [asdict(k) for k in self.kept],
            "kept_monthly_usd": self.monthly_usd,
        }


class _CfnLoader(yaml.SafeLoader):
    """Reads a template's structure; the short-form intrinsics (!Ref, !Sub...) become None."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def deletion_policies(template_body: Any) -> dict[str, str]:
    """Logical id -> DeletionPolicy (Delete when unset) of a deployed template (YAML, JSON or parsed)."""
    body = template_body if isinstance(template_body, dict) else yaml.load(template_body, Loader=_CfnLoader)  # noqa: S506
    return {name: str(r.get("DeletionPolicy", "Delete")) for name, r in (body.get("Resources") or {}).items()}


def _missing(error: ClientError, *codes: str) -> bool:
    return error.response.get("Error", {}).get("Code") in codes


@dataclass
class Teardown:
    """The teardown of one deployment: `client(service)` gives a boto3 client for its account/region."""

    client: Callable[[str], Any]
    prefix: str
    buckets: list[str]
    user_pool_name: str
    parameter_path: str = "/sbw/"
    purge: bool = False
    check_mode: bool = False
    sandbox: bool = False
    wait_delay: int = 15
    result: Result = field(default_factory=Result)
    _key_ids: set[str] = field(default_factory=set)
    # Buckets the templates delete with their stack (build outputs, transfers): never data.
    _rebuilt_buckets: set[str] = field(default_factory=set)

    # --- the plan ---------------------------------------------------------------------------------
    def run(self) -> Result:
        for name in reversed(STACKS):
            self._stack(f"{self.prefix}-{name}")
        for bucket in self.buckets:
            self._bucket(bucket)
        self._snapshots()
        self._parameters()
        self._keys()
        self._user_pool()
        return self.result

    def _act(self, action: str, call: Callable[[], Any] | None = None) -> None:
        """Record one change; make it unless in check mode."""
        self.result.changed = True
        self.result.actions.append(action)
        if call is not None and not self.check_mode:
            call()

    def _keep(self, kind: str, name: str, quantity: str, amount: float) -> None:
        self.result.kept.append(Kept(kind, name, quantity, round(cost.kept_monthly_usd(kind, amount), 2)))

    # --- stacks -----------------------------------------------------------------------------------
    def _stack(self, stack: str) -> None:
        cfn = self.client("cloudformation")
        try:
            (described,) = cfn.describe_stacks(StackName=stack)["Stacks"]
        except ClientError as error:
            if "does not exist" in str(error):
                return
            raise
        if described["StackStatus"] == "DELETE_COMPLETE":
            return
        policies = deletion_policies(cfn.get_template(StackName=stack)["TemplateBody"])
        resources = [
            r
            for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack)
            for r in page["StackResourceSummaries"]
        ]
        # The PostgreSQL data volumes (DeletionPolicy: Snapshot): CloudFormation snapshots them as it deletes
        # the stack, after the instances are gone (a clean copy); the teardown only tags that snapshot so
        # the report and a purge find it. moto ignores the policy: there the teardown takes it itself.
        policy_volumes = {
            r["PhysicalResourceId"]: self._volume_name(r["PhysicalResourceId"], r["LogicalResourceId"])
            for r in resources
            if r["ResourceType"] == "AWS::EC2::Volume"
            and r.get("PhysicalResourceId")
            and policies.get(r["LogicalResourceId"]) == "Snapshot"
        }
        for resource in resources:
            kind, physical = resource["ResourceType"], resource.get("PhysicalResourceId")
            retained = policies.get(resource["LogicalResourceId"], "Delete") == "Retain"
            if not physical:
                continue
            if kind == "AWS::S3::Bucket" and not retained:
                # CloudFormation refuses to delete a bucket that holds objects (or old versions).
                self._empty_bucket(physical)
                self._rebuilt_buckets.add(physical)
            elif kind == "AWS::EC2::Instance":
                self._instance(physical, skip=set(policy_volumes))
            elif kind == "AWS::KMS::Key":
                self._key_ids.add(physical)
            elif kind == "AWS::EC2::VPC" and self.sandbox:
                self._act(
                    f"moto: remove what it leaves in {physical}", lambda v=physical: self._moto_leftovers(v)
                )
        if described.get("EnableTerminationProtection"):
            self._act(f"lift termination protection of stack {stack}", lambda: self._unprotect(stack))
        for volume_id, name in policy_volumes.items():
            if self.sandbox and not self._final_snapshot_exists(volume_id):
                self._act(
                    f"moto: final snapshot of {name} ({volume_id}), its DeletionPolicy: Snapshot",
                    lambda v=volume_id, n=name: self._snapshot(v, n, "data volume"),
                )
        self._act(f"delete stack {stack}", lambda: self._delete_stack(stack))
        for volume_id, name in policy_volumes.items():
            if not self.sandbox:
                self._act(
                    f"tag CloudFormation's final snapshot of {name} ({volume_id})",
                    lambda v=volume_id, n=name: self._tag_policy_snapshot(v, n),
                )

    def _moto_leftovers(self, vpc_id: str) -> None:
        """moto keeps the network interfaces of deleted interface endpoints and terminated instances (and
        their Elastic IP associations), and never deletes a template's route tables or internet gateway,
        so its VPC would never delete; AWS removes all of these itself. (moto's deletes of the
        associations and routes are no-ops, so removing them first leaves its stack deletion intact.)"""
        ec2 = self.client("ec2")
        for table in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "RouteTables"
        ]:
            if any(a.get("Main") for a in table.get("Associations", [])):
                continue
            for association in table.get("Associations", []):
                ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
            ec2.delete_route_table(RouteTableId=table["RouteTableId"])
        gateways = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
        for gateway in gateways["InternetGateways"]:
            ec2.detach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"], VpcId=vpc_id)
            ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
        for address in ec2.describe_addresses()["Addresses"]:
            if (
                address.get("NetworkInterfaceId")
                and address.get("InstanceId")
                and self._terminated(address["InstanceId"])
            ):
                ec2.disassociate_address(AssociationId=address["AssociationId"])
        interfaces = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        for interface in interfaces["NetworkInterfaces"]:
            owner = interface.get("Attachment", {}).get("InstanceId")
            if owner is None or self._terminated(owner):
                ec2.delete_network_interface(NetworkInterfaceId=interface["NetworkInterfaceId"])

    def _terminated(self, instance_id: str) -> bool:
        reservations = self.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        return all(i["State"]["Name"] == "terminated" for r in reservations for i in r["Instances"])

    def _unprotect(self, stack: str) -> None:
        try:
            self.client("cloudformation").update_termination_protection(
                StackName=stack, EnableTerminationProtection=False
            )
        except (ClientError, ResponseParserError):
            # moto (the sandbox) answers UpdateTerminationProtection with a bare 500 (not implemented); it
            # never enforces protection either. Anywhere else the error stands.
            if not self.sandbox:
                raise

    def _delete_stack(self, stack: str) -> None:
        cfn = self.client("cloudformation")
        stack_id = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
        cfn.delete_stack(StackName=stack)
        try:
            cfn.get_waiter("stack_delete_complete").wait(
                StackName=stack_id, WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": 240}
            )
        except Exception as error:  # botocore WaiterError: say why from the stack's events
            events = cfn.describe_stack_events(StackName=stack_id).get("StackEvents", [])
            reasons = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                for e in events
                if e.get("ResourceStatus") == "DELETE_FAILED"
            ]
            raise TeardownError(
                f"stack {stack} was not deleted: {'; '.join(reasons[:5]) or error}"
            ) from error

    # --- instances: final snapshots, then terminate -----------------------------------------------
    def _volume_name(self, volume_id: str, fallback: str) -> str:
        try:
            (volume,) = self.client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"]
        except ClientError as error:
            if _missing(error, "InvalidVolume.NotFound"):
                return fallback
            raise
        return {t["Key"]: t["Value"] for t in volume.get("Tags", [])}.get("Name", fallback)

    def _tag_policy_snapshot(self, volume_id: str, name: str) -> None:
        ec2 = self.client("ec2")
        found = ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": [volume_id]}]
        )["Snapshots"]
        if not found:
            raise TeardownError(
                f"CloudFormation left no snapshot of {name} ({volume_id}) (DeletionPolicy: Snapshot)"
            )
        snapshot = max(found, key=lambda s: s["StartTime"])
        ec2.create_tags(
            Resources=[snapshot["SnapshotId"]],
            Tags=[
                {"Key": "Name", "Value": f"{name}-final"},
                {"Key": SNAPSHOT_TAG, "Value": volume_id},
                {"Key": "sbw:stack-prefix", "Value": self.prefix},
            ],
        )

    def _instance(self, instance_id: str, skip: set[str] | None = None) -> None:
        ec2 = self.client("ec2")
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as error:
            if _missing(error, "InvalidInstanceID.NotFound"):
                return
            raise
        for instance in (i for r in reservations for i in r["Instances"]):
            if instance["State"]["Name"] in {"terminated", "shutting-down"}:
                continue
            name = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}.get("Name", instance_id)
            if not self.purge:
                for mapping in instance.get("BlockDeviceMappings", []):
                    volume_id = mapping.get("Ebs", {}).get("VolumeId")
                    if volume_id in (skip or set()):
                        continue  # a data volume: snapshotted by its DeletionPolicy with the stack
                    if volume_id and not self._final_snapshot_exists(volume_id):
                        self._act(
                            f"final snapshot of {name}'s volume {volume_id}",
                            lambda v=volume_id, n=name, d=mapping["DeviceName"]: self._snapshot(v, n, d),
                        )
            self._act(f"terminate instance {name} ({instance_id})", lambda i=instance_id: self._terminate(i))

    def _final_snapshot_exists(self, volume_id: str) -> bool:
        found = self.client("ec2").describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{SNAPSHOT_TAG}", "Values": [volume_id]}]
        )["Snapshots"]
        return bool(found)

    def _snapshot(self, volume_id: str, name: str, device: str) -> None:
        ec2 = self.client("ec2")
        snapshot = ec2.create_snapshot(
            VolumeId=volume_id,
            Description=f"Final snapshot of {name} {device} (playbooks/teardown.yml)",
            TagSpecifications=[
                {
                    "ResourceType": "snapshot",
                    "Tags": [
                        {"Key": "Name", "Value": f"{name}-final"},
                        {"Key": SNAPSHOT_TAG, "Value": volume_id},
                        {"Key": "sbw:stack-prefix", "Value": self.prefix},
                    ],
                }
            ],
        )
        # The instance is terminated next and its root volume goes with it: the copy must be complete.
        ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[snapshot["SnapshotId"]], WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": 480}
        )

    def _terminate(self, instance_id: str) -> None:
        ec2 = self.client("ec2")
        ec2.terminate_instances(InstanceIds=[instance_id])
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=[instance_id], WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": 120}
        )

    def _snapshots(self) -> None:
        ec2 = self.client("ec2")
        found = ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "tag:sbw:stack-prefix", "Values": [self.prefix]}]
        )["Snapshots"]
        for snapshot in found:
            name = {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}.get(
                "Name", snapshot["SnapshotId"]
            )
            label = f"{name} ({snapshot['SnapshotId']})"
            if self.purge:
                self._act(
                    f"delete snapshot {label}",
                    lambda s=snapshot["SnapshotId"]: ec2.delete_snapshot(SnapshotId=s),
                )
            else:
                size = float(snapshot["VolumeSize"])
                self._keep(
                    "snapshot", label, f"{size:g} GiB volume (billed: used blocks, at most this)", size
                )

    # --- buckets ----------------------------------------------------------------------------------
    def _versions(self, bucket: str) -> Iterator[dict[str, Any]]:
        s3 = self.client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            yield from page.get("Versions", [])
            yield from page.get("DeleteMarkers", [])

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client("s3").head_bucket(Bucket=bucket)
        except ClientError as error:
            if _code(error) in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise
        return True

    def _empty_bucket(self, bucket: str) -> None:
        if self._bucket_exists(bucket) and next(self._versions(bucket), None) is not None:
            self._act(f"empty bucket {bucket} (every version)", lambda: self._delete_versions(bucket))

    def _delete_versions(self, bucket: str) -> None:
        s3 = self.client("s3")
        batch: list[dict[str, str]] = []
        for version in list(self._versions(bucket)):
            batch.append({"Key": version["Key"], "VersionId": version["VersionId"]})
            if len(batch) == 1000:
                self._delete_batch(s3, bucket, batch)
                batch = []
        if batch:
            self._delete_batch(s3, bucket, batch)

    @staticmethod
    def _delete_batch(s3: Any, bucket: str, batch: list[dict[str, str]]) -> None:
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise TeardownError(f"bucket {bucket}: {first.get('Key')}: {first.get('Message')}")

    def _bucket(self, bucket: str) -> None:
        if not self._bucket_exists(bucket):
            return
        if self.purge or bucket in self._rebuilt_buckets:
            # A bucket with DeletionPolicy Delete still here after its stack: moto does not delete a
            # template's buckets with the stack (AWS does, or the stack deletion fails).
            self._empty_bucket(bucket)
            self._act(f"delete bucket {bucket}", lambda: self.client("s3").delete_bucket(Bucket=bucket))
        else:
            size = sum(v.get("Size", 0) for v in self._versions(bucket))
            self._keep("bucket", bucket, f"{size / 2**20:,.1f} MiB (every version)", size / cost.GB)

    # --- parameters, their key, the user pool -----------------------------------------------------
    def _parameter_list(self) -> list[dict[str, Any]]:
        ssm = self.client("ssm")
        return [
            p
            for page in ssm.get_paginator("describe_parameters").paginate(
                ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [self.parameter_path]}]
            )
            for p in page["Parameters"]
        ]

    def _parameters(self) -> None:
        found = self._parameter_list()
        self._key_ids.update(p["KeyId"] for p in found if p.get("KeyId") and "alias/aws/" not in p["KeyId"])
        if not found:
            return
        names = sorted(p["Name"] for p in found)
        if self.purge:
            ssm = self.client("ssm")
            for start in range(0, len(names), 10):
                chunk = names[start : start + 10]
                self._act(
                    f"delete parameters {', '.join(chunk)}", lambda c=chunk: ssm.delete_parameters(Names=c)
                )
        else:
            self._keep(
                "parameter", f"{self.parameter_path}* ({', '.join(names)})", f"{len(names)}", len(names)
            )

    def _keys(self) -> None:
        kms = self.client("kms")
        for key_id in sorted(self._key_ids):
            try:
                metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
            except ClientError as error:
                if _missing(error, "NotFoundException"):
                    continue
                raise
            if metadata["KeyManager"] != "CUSTOMER" or metadata["KeyState"] in {
                "PendingDeletion",
                "PendingReplicaDeletion",
            }:
                continue
            if self.purge:
                self._act(
                    f"schedule deletion of KMS key {metadata['KeyId']} in {KEY_DELETION_DAYS} days",
                    lambda k=metadata["KeyId"]: kms.schedule_key_deletion(
                        KeyId=k, PendingWindowInDays=KEY_DELETION_DAYS
                    ),
                )
            else:
                self._keep("kms_key", f"KMS key {metadata['KeyId']} (decrypts the kept parameters)", "1", 1)

    def _user_pool(self) -> None:
        cognito = self.client("cognito-idp")
        pools = [
            p
            for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60)
            for p in page["UserPools"]
            if p["Name"] == self.user_pool_name
        ]
        for pool in pools:
            if self.purge:
                self._act(
                    f"delete user pool {pool['Name']} ({pool['Id']})",
                    lambda i=pool["Id"]: self._delete_pool(i),
                )
            else:
                users = cognito.describe_user_pool(UserPoolId=pool["Id"])["UserPool"].get(
                    "EstimatedNumberOfUsers", 0
                )
                self._keep("user_pool", f"user pool {pool['Name']} ({pool['Id']})", f"{users} users", 1)

    def _delete_pool(self, pool_id: str) -> None:
        cognito = self.client("cognito-idp")
        # The template sets DeletionProtection: ACTIVE; lifted only here, for the pool being deleted.
        cognito.update_user_pool(UserPoolId=pool_id, DeletionProtection="INACTIVE")
        cognito.delete_user_pool(UserPoolId=pool_id)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
