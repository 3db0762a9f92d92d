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
    dry_run: bool = False,
) -> PublishResult:
    """Upload what the bucket lacks: missing .debs first (parallel), then the indices if they changed.

    `dry_run`: list what would be uploaded (uploaded_debs, uploaded_indices) and upload nothing.
    """
    public_key = key_dir / PUBLIC_KEY_NAME
    # In a dry run the key may not exist yet (check mode on a fresh machine): nothing can verify then.
    result = PublishResult(
        fingerprint=key_fingerprint(public_key) if public_key.exists() or not dry_run else ""
    )
    debs = sorted(str(path.relative_to(repo_dir)) for path in (repo_dir / "pool").rglob("*.deb"))
    result.packages = len(debs)
    result.bytes_total = sum((repo_dir / rel).stat().st_size for rel in debs)
    remote = list_objects(client, bucket, _key(prefix, "pool/"))
    missing = [rel for rel in debs if remote.get(_key(prefix, rel)) != (repo_dir / rel).stat().st_size]
    result.uploaded_debs = missing
    dist = f"dists/{suite}"
    packages_rel = f"{dist}/{DEFAULT_COMPONENT}/binary-{architecture}/Packages"
    indices = [
        packages_rel,
        f"{packages_rel}.gz",
        f"{dist}/Release",
        f"{dist}/Release.gpg",
        f"{dist}/InRelease",
    ]
    local_packages = (repo_dir / packages_rel).read_bytes()
    published_packages = _get(client, bucket, _key(prefix, packages_rel))
    result.index_before, result.index_after = published_packages, local_packages
    current = _indices_current(
        client, bucket, prefix, key_dir, packages_rel, published_packages, local_packages
    )
    if dry_run:
        result.uploaded_indices = [] if current else indices
        return result
    with concurrent.futures.ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS) as pool:
        futures = [
            pool.submit(_put, client, bucket, _key(prefix, rel), repo_dir / rel, rel) for rel in missing
        ]
        for future in futures:
            future.result()

    if current:
        return result
    release = write_release(repo_dir, suite, architecture, origin)
    sign_release(release, key_dir)
    for rel in indices:  # strictly in order: the Release files name the Packages hashes
        _put(client, bucket, _key(prefix, rel), repo_dir / rel, rel)
    result.uploaded_indices = indices
    return result


def _indices_current(
    client: Any,
    bucket: str,
    prefix: str,
    key_dir: Path,
    packages_rel: str,
    published_packages: bytes | None,
    local_packages: bytes,
) -> bool:
    """True when the published Packages equals the local one and its InRelease verifies and lists it."""
    dist = packages_rel.split(f"/{DEFAULT_COMPONENT}/")[0]
    published_inrelease = _get(client, bucket, _key(prefix, f"{dist}/InRelease"))
    if (
        published_packages != local_packages
        or published_inrelease is None
        or not (key_dir / PUBLIC_KEY_NAME).exists()
    ):
        return False
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as handle:
        handle.write(published_inrelease)
        handle.flush()
        return verify(key_dir / PUBLIC_KEY_NAME, Path(handle.name)) and _release_lists(
            published_inrelease, local_packages, packages_rel.removeprefix(f"{dist}/")
        )


def _release_lists(inrelease: bytes, packages: bytes, rel: str) -> bool:
    """True when the signed Release names `rel` with the SHA256 of `packages` (indices consistent)."""
    digest = hashlib.sha256(packages).hexdigest()
    return (
        re.search(rf"^ {digest}\s+{len(packages)}\s+{re.escape(rel)}$", inrelease.decode(), re.M) is not None
    )


READ_POLICY_SID = "AptRepositoryThroughGatewayEndpointOnly"


def plan_read_policy(
    client: Any, bucket: str, prefix: str, vpce: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bucket policy now and with the storage stack's repository statement merged in.

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
        before = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
            raise
        before = {}
    others = [item for item in before.get("Statement", []) if item.get("Sid") != READ_POLICY_SID]
    if len(others) + 1 == len(before.get("Statement", [])) and statement in before["Statement"]:
        return before, before
    return before, {
        "Version": before.get("Version", "2012-10-17"),
        **before,
        "Statement": [*others, statement],
    }


def ensure_read_policy(client: Any, bucket: str, prefix: str, vpce: str) -> bool:
    """Merge the repository statement into the bucket policy (plan_read_policy); True when it changed."""
    before, after = plan_read_policy(client, bucket, prefix, vpce)
    if before == after:
        return False
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(after))
    return True
