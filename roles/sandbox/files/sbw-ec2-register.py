#!/usr/bin/env python3
"""Register the sandbox hosts as running EC2 instances in moto, once (idempotent).

Usage: sbw-ec2-register.py ENDPOINT_URL REGION PROJECT_TAG TRANSFER_BUCKET HOSTS_JSON
HOSTS_JSON: [{"name": "webdb", "ec2_name": "SBW_EC2_WebDB", "role": "webdb"}, ...]

Each host becomes one instance tagged Name/Project/Role/SsmTransferBucket, the tags
inventory/aws_ec2.yml composes from (as cloudformation/hosts.yaml writes them), and the transfer
bucket is created in moto if missing. A host whose Name tag already names a
running instance is left alone. Prints JSON: {"changed": bool, "instances": {name: instance_id}}.
A script rather than amazon.aws.ec2_instance: moto needs an AMI id from its own catalogue and the
sandbox only needs the tags, which this does in two API calls per host.
"""

from __future__ import annotations

import json
import sys

import boto3


def main(argv: list[str]) -> int:
    """Create the missing instances and print what exists."""
    endpoint_url, region, project, bucket, hosts_json = argv[1:6]
    # Credentials come from the environment: roles/sandbox/tasks/ec2.yml sets moto's fake ones.
    ec2 = boto3.client("ec2", endpoint_url=endpoint_url, region_name=region)
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    changed = False
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        changed = True
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instances: dict[str, str] = {}
    for host in json.loads(hosts_json):
        found = ec2.describe_instances(
            Filters=[
                {"Name": "tag:Name", "Values": [host["ec2_name"]]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        existing = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
        if existing:
            instances[host["name"]] = existing[0]
            continue
        tags = [
            {"Key": "Name", "Value": host["ec2_name"]},
            {"Key": "Project", "Value": project},
            {"Key": "Role", "Value": host["role"]},
            {"Key": "SsmTransferBucket", "Value": bucket},
        ]
        created = ec2.run_instances(
            ImageId=image_id,
            InstanceType="t3.small",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        instances[host["name"]] = created["Instances"][0]["InstanceId"]
        changed = True
    print(json.dumps({"changed": changed, "instances": instances}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
