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

CLI: `python -m sbw_ops.apt_repo keygen|base-status|publish ...` (JSON on stdout for Ansible).

One module per step: apt_repo_resolve (1, 2), apt_repo_build and apt_repo_keys (3), apt_repo_s3 (4),
apt_repo_base (what they share); this one runs them in order (`build_and_publish`) and is the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
from sbw_ops.apt_repo_resolve import AptEnv, extract_base_status, parse_print_uris, resolve_and_download
from sbw_ops.apt_repo_s3 import READ_POLICY_SID, ensure_read_policy, list_objects, publish

# The interface of the package (tests and the role's CLI use it through sbw_ops.apt_repo).
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
    "main",
    "parse_print_uris",
    "publish",
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
) -> PublishResult:
    """The whole flow: resolve + download (cached), build, sign when needed, publish incrementally."""
    upstream = upstream or Upstream()
    refs = resolve_and_download(packages, base_status, cache_dir, upstream)
    archives = cache_dir / f"apt-{upstream.architecture}" / "archives"
    repo_dir = repo_dir or cache_dir / "repos" / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{bucket}/{prefix}")
    build_repository(refs, archives, repo_dir, suite, upstream.architecture)
    return publish(client, bucket, prefix, repo_dir, key_dir, suite, upstream.architecture)


# --------------------------------------------------------------------------------------------- CLI


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI used by the apt_repo_publish role; prints one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m sbw_ops.apt_repo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="create the ed25519 signing key once")
    keygen.add_argument("--key-dir", type=Path, required=True)
    stand_in = sub.add_parser("read-policy", help="sandbox only: the stack's anonymous-read statement")
    stand_in.add_argument("--bucket", required=True)
    stand_in.add_argument("--prefix", default="repo")
    stand_in.add_argument("--vpce", default="vpce-00000000000000000")
    stand_in.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3", ""))
    stand_in.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", ""))
    base = sub.add_parser("base-status", help="extract var/lib/dpkg/status from a root tarball")
    base.add_argument("--tarball", type=Path, required=True)
    base.add_argument("--out", type=Path, required=True)
    pub = sub.add_parser("publish", help="resolve, download, build, sign and publish")
    pub.add_argument("--base-status", type=Path, required=True)
    pub.add_argument("--bucket", required=True)
    pub.add_argument("--prefix", default="apt/dwh")
    pub.add_argument("--key-dir", type=Path, required=True)
    pub.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    pub.add_argument("--repo-dir", type=Path)
    pub.add_argument("--suite", default=DEFAULT_SUITE)
    pub.add_argument("--architecture", default="amd64")
    pub.add_argument("--upstream-sources", type=Path, help="deb822 sources file (default: Debian 12)")
    pub.add_argument(
        "--no-upgrades", action="store_true", help="leave out the base system's pending upgrades"
    )
    pub.add_argument("--apt-option", action="append", default=[], help='extra resolver config: Name "value";')
    pub.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3", ""))
    pub.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", ""))
    pub.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            output: dict[str, Any] = {"changed": ensure_signing_key(args.key_dir)}
            output["fingerprint"] = key_fingerprint(args.key_dir / PUBLIC_KEY_NAME)
        elif args.command == "read-policy":
            client = _s3_client(args.endpoint_url, args.region)
            output = {"changed": ensure_read_policy(client, args.bucket, args.prefix, args.vpce)}
        elif args.command == "base-status":
            output = {"changed": extract_base_status(args.tarball, args.out)}
        else:
            upstream = Upstream(
                sources=args.upstream_sources.read_text()
                if args.upstream_sources
                else DEFAULT_UPSTREAM_SOURCES,
                architecture=args.architecture,
                include_upgrades=not args.no_upgrades,
                apt_options=tuple(args.apt_option),
            )
            output = build_and_publish(
                _s3_client(args.endpoint_url, args.region),
                args.packages,
                args.base_status,
                args.bucket,
                args.prefix,
                args.key_dir,
                args.cache_dir,
                args.repo_dir,
                upstream,
                args.suite,
            ).as_dict()
    except (AptRepoError, BotoCoreError, ClientError) as error:
        json.dump({"failed": True, "changed": False, "msg": f"{type(error).__name__}: {error}"}, sys.stdout)
        return 1
    json.dump(output, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
