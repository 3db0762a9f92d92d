"""A signed Debian repository of the private dwh host's packages, published to the artifacts bucket.

The dwh host has no route to the internet ("no NAT"): it reads its packages from an apt repository
kept in S3 and reached through the S3 gateway endpoint. This module builds and publishes that
repository from the controller (driven by the `apt_repo_publish` role):

1. **Resolve** the dependency closure of the requested packages against the *base system's dpkg
   status* (the exact package state of the host image: the sandbox's root tarball, or the AMI's
   status fetched once from the host), with an isolated apt configuration (its own sources, state,
   cache and architecture; only the controller's proxy/validity settings are inherited). The
   result is what `apt-get install --download-only --no-install-recommends` would fetch on that
   host, plus the base system's pending upgrades (`dist-upgrade`), so security updates of base
   packages reach the host when the repository is re-published.
2. **Download** the .debs into a persistent cache (`/var/cache/sbw-sandbox/apt-repo/archives` by
   default) so re-runs fetch only what changed upstream.
3. **Build** the repository with `apt-ftparchive` (stanzas sorted, gzip without timestamp, so the
   same closure gives byte-identical `Packages`) and sign it with an ed25519 key: `InRelease`
   (clear-signed) and `Release.gpg` (detached).
4. **Publish** to S3 with boto3: only the .debs missing from the bucket's listing (one paginated
   LIST, parallel PUTs), the pool first and the indices last (`InRelease` the very last), and the
   indices only when `Packages` differs from the published one or the published `InRelease` does
   not verify with the current key. A re-run with nothing new makes zero PUTs.

boto3 rather than `amazon.aws.s3_object` in a loop: the full dwh closure is ~650 files; one
Ansible task per object costs ~1 s each (module transfer + a HEAD per object), i.e. >10 minutes,
where one LIST plus parallel PUTs of what is missing takes seconds.

The role calls these functions through the modules of the local collection `sbw.ops`
(`collections/ansible_collections/sbw/ops`: apt_repo_key, apt_repo_base_status, apt_repo_publish,
apt_repo_read_policy), which add check mode and diff.

One module per step: apt_repo_resolve (1, 2), apt_repo_build and apt_repo_keys (3), apt_repo_s3 (4),
apt_repo_base (what they share); this one runs them in order (`build_and_publish`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sbw_ops.apt_repo_base import (
    DEFAULT_CACHE_DIR,
    DEFAULT_COMPONENT,
    DEFAULT_SUITE,
    DEFAULT_UPSTREAM_SOURCES,
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    AptRepoError,
    DebRef,
    PublishResult,
    Upstream,
)
from sbw_ops.apt_repo_build import build_repository, write_release
from sbw_ops.apt_repo_keys import ensure_signing_key, key_fingerprint, sign_release, verify
from sbw_ops.apt_repo_resolve import (
    AptEnv,
    extract_base_status,
    parse_print_uris,
    read_base_status,
    resolve_and_download,
)
from sbw_ops.apt_repo_s3 import READ_POLICY_SID, ensure_read_policy, list_objects, plan_read_policy, publish

# The interface of the package (tests and the sbw.ops modules use it through sbw_ops.apt_repo).
__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_COMPONENT",
    "DEFAULT_SUITE",
    "DEFAULT_UPSTREAM_SOURCES",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "READ_POLICY_SID",
    "AptEnv",
    "AptRepoError",
    "DebRef",
    "PublishResult",
    "Upstream",
    "build_and_publish",
    "build_repository",
    "ensure_read_policy",
    "ensure_signing_key",
    "extract_base_status",
    "key_fingerprint",
    "list_objects",
    "parse_print_uris",
    "plan_read_policy",
    "publish",
    "read_base_status",
    "resolve_and_download",
    "sign_release",
    "verify",
    "write_release",
]


def build_and_publish(
    client: Any,
    packages: Sequence[str],
    base_status: Path,
    bucket: str,
    prefix: str,
    key_dir: Path,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    repo_dir: Path | None = None,
    upstream: Upstream | None = None,
    suite: str = DEFAULT_SUITE,
    dry_run: bool = False,
) -> PublishResult:
    """The whole flow: resolve + download (cached), build, sign when needed, publish incrementally.

    `dry_run` (the module's check mode): resolve and download into the content-keyed cache, build in
    a throw-away directory, and report what would be uploaded without uploading or signing anything.
    """
    upstream = upstream or Upstream()
    refs = resolve_and_download(packages, base_status, cache_dir, upstream)
    archives = cache_dir / f"apt-{upstream.architecture}" / "archives"
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="sbw-apt-repo-check-") as scratch:
            build_repository(refs, archives, Path(scratch), suite, upstream.architecture)
            return publish(
                client, bucket, prefix, Path(scratch), key_dir, suite, upstream.architecture, dry_run=True
            )
    repo_dir = repo_dir or cache_dir / "repos" / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{bucket}/{prefix}")
    build_repository(refs, archives, repo_dir, suite, upstream.architecture)
    return publish(client, bucket, prefix, repo_dir, key_dir, suite, upstream.architecture)
