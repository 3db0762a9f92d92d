"""Publishing the built repository to S3 incrementally (only missing .debs, the pool first, the indices
last and only when changed) and, for the S3 stand-in only, its anonymous-read bucket policy."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from sbw_ops.apt_repo_base import (
    _UPLOAD_WORKERS,
    DEFAULT_COMPONENT,
    DEFAULT_SUITE,
    PUBLIC_KEY_NAME,
    PublishResult,
)
from sbw_ops.apt_repo_build import write_release
from sbw_ops.apt_repo_keys import key_fingerprint, sign_release, verify


def _key(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key -> size of every object under `prefix` (one paginated LIST)."""
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj["Size"]
    return found


def _get(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def _content_type(rel: str) -> str:
    if rel.endswith(".deb"):
        return "application/vnd.debian.binary-package"
    if rel.endswith(".gz"):
        return "application/gzip"
    return "text/plain"


def _put(client: Any, bucket: str, key: str, path: Path, rel: str) -> None:
    with path.open("rb") as body:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=_content_type(rel))


def publish(
    client: Any,
    bucket: str,
    prefix: str,
    repo_dir: Path,
    key_dir: Path,
    suite: str = DEFAULT_SUITE,
    architecture: str = "amd64",
    origin: str = "sbw-dwh",
) -> PublishResult:
    """Upload what the bucket lacks: missing .debs first (parallel), then the indices if they changed."""
    result = PublishResult(fingerprint=key_fingerprint(key_dir / PUBLIC_KEY_NAME))
    debs = sorted(str(path.relative_to(repo_dir)) for path in (repo_dir / "pool").rglob("*.deb"))
    result.packages = len(debs)
    result.bytes_total = sum((repo_dir / rel).stat().st_size for rel in debs)
    remote = list_objects(client, bucket, _key(prefix, "pool/"))
    missing = [rel for rel in debs if remote.get(_key(prefix, rel)) != (repo_dir / rel).stat().st_size]
    with concurrent.futures.ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS) as pool:
        futures = [
            pool.submit(_put, client, bucket, _key(prefix, rel), repo_dir / rel, rel) for rel in missing
        ]
        for future in futures:
            future.result()
    result.uploaded_debs = missing

    dist = f"dists/{suite}"
    packages_rel = f"{dist}/{DEFAULT_COMPONENT}/binary-{architecture}/Packages"
    local_packages = (repo_dir / packages_rel).read_bytes()
    published_packages = _get(client, bucket, _key(prefix, packages_rel))
    published_inrelease = _get(client, bucket, _key(prefix, f"{dist}/InRelease"))
    current = published_packages == local_packages and published_inrelease is not None
    if current:
        with tempfile.NamedTemporaryFile(suffix=".InRelease") as handle:
            handle.write(published_inrelease or b"")
            handle.flush()
            current = verify(key_dir / PUBLIC_KEY_NAME, Path(handle.name)) and _release_lists(
                published_inrelease or b"", local_packages, packages_rel.removeprefix(f"{dist}/")
            )
    if current:
        return result
    release = write_release(repo_dir, suite, architecture, origin)
    sign_release(release, key_dir)
    indices = [
        packages_rel,
        f"{packages_rel}.gz",
        f"{dist}/Release",
        f"{dist}/Release.gpg",
        f"{dist}/InRelease",
    ]
    for rel in indices:  # strictly in order: the Release files name the Packages hashes
        _put(client, bucket, _key(prefix, rel), repo_dir / rel, rel)
    result.uploaded_indices = indices
    return result


def _release_lists(inrelease: bytes, packages: bytes, rel: str) -> bool:
    """True when the signed Release names `rel` with the SHA256 of `packages` (indices consistent)."""
    digest = hashlib.sha256(packages).hexdigest()
    return (
        re.search(rf"^ {digest}\s+{len(packages)}\s+{re.escape(rel)}$", inrelease.decode(), re.M) is not None
    )


READ_POLICY_SID = "AptRepositoryThroughGatewayEndpointOnly"


def ensure_read_policy(client: Any, bucket: str, prefix: str, vpce: str) -> bool:
    """Merge the storage stack's repository statement into the bucket policy; True when it changed.

    For the sandbox only: moto's CloudFormation does not create AWS::S3::BucketPolicy, and moto
    refuses anonymous reads without a policy (it ignores the aws:sourceVpce condition). On AWS the
    storage stack owns this statement.
    """
    statement = {
        "Sid": READ_POLICY_SID,
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix.strip('/')}/*",
        "Condition": {"StringEquals": {"aws:sourceVpce": vpce}},
    }
    try:
        policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
            raise
        policy = {"Version": "2012-10-17", "Statement": []}
    others = [item for item in policy.get("Statement", []) if item.get("Sid") != READ_POLICY_SID]
    if len(others) + 1 == len(policy.get("Statement", [])) and statement in policy["Statement"]:
        return False
    policy["Statement"] = [*others, statement]
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return True
