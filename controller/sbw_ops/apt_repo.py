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
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

DEFAULT_CACHE_DIR = Path("/var/cache/sbw-sandbox/apt-repo")
DEFAULT_SUITE = "bookworm"
DEFAULT_COMPONENT = "main"
DEFAULT_UPSTREAM_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
PRIVATE_KEY_NAME = "signing-key.asc"
PUBLIC_KEY_NAME = "signing-key.gpg"
# Controller apt settings worth inheriting (network access to the upstream mirror), nothing else.
_INHERITED_APT = re.compile(r"^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date|Retries|ForceIPv[46])\b")
# apt-get --print-uris: 'URI' FILE SIZE HASH -- HASH may be empty (seen for security-suite packages).
_PRINT_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<file>\S+) (?P<size>\d+)(?: (?P<hash>\S*))?$")
_EPOCH = re.compile(r"_\d+%3a")
_UPLOAD_WORKERS = 8


class AptRepoError(RuntimeError):
    """A step of building or publishing the repository failed (the message says which and why)."""


@dataclasses.dataclass(frozen=True)
class DebRef:
    """One .deb of the closure: where apt fetches it, its cache file name, size and hash."""

    uri: str
    filename: str
    size: int
    sha256: str

    @property
    def pool_path(self) -> str:
        """Path in the repository: pool/main/<initial>/<name_version_arch>.deb (epoch dropped, as Debian)."""
        name = _EPOCH.sub("_", self.filename)
        initial = name[:4] if name.startswith("lib") else name[:1]
        return f"pool/{DEFAULT_COMPONENT}/{initial}/{name}"


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where the closure comes from: deb822 sources, target architecture, resolver choices."""

    sources: str = DEFAULT_UPSTREAM_SOURCES
    architecture: str = "amd64"
    include_upgrades: bool = True
    apt_options: tuple[str, ...] = ()  # extra apt `Name "value";` lines (tests keep closures small)


@dataclasses.dataclass
class PublishResult:
    """What a publish did; `changed` is false when nothing was uploaded."""

    packages: int = 0
    bytes_total: int = 0
    uploaded_debs: list[str] = dataclasses.field(default_factory=list)
    uploaded_indices: list[str] = dataclasses.field(default_factory=list)
    fingerprint: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.uploaded_debs or self.uploaded_indices)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "packages": self.packages,
            "bytes_total": self.bytes_total,
            "uploaded_debs": len(self.uploaded_debs),
            "uploaded_indices": self.uploaded_indices,
            "fingerprint": self.fingerprint,
        }


def _run(cmd: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise AptRepoError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout)[-3000:]}")
    return result


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (the shared .deb cache is used by parallel runs and test workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- keys


@contextlib.contextmanager
def _gnupg_home() -> Iterator[Path]:
    """A throw-away GNUPGHOME (short path: the agent socket must fit), its agent stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="sbwgpg-", dir="/tmp"))
    home.chmod(0o700)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str, what: str) -> subprocess.CompletedProcess[str]:
    return _run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args], what)


def key_fingerprint(public_key: Path) -> str:
    """The primary key fingerprint of a public key file."""
    with _gnupg_home() as home:
        out = _gpg(home, "--with-colons", "--show-keys", str(public_key), what="gpg --show-keys").stdout
    for line in out.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise AptRepoError(f"no fingerprint in {public_key}")


def ensure_signing_key(key_dir: Path, uid: str = "SBW private apt repository <ops@sbw.invalid>") -> bool:
    """Create the ed25519 signing key once under `key_dir` (private 0600, public beside it).

    Returns True when a key was generated, False when one was already there.
    """
    private, public = key_dir / PRIVATE_KEY_NAME, key_dir / PUBLIC_KEY_NAME
    if private.exists() and public.exists():
        return False
    key_dir.mkdir(parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    with _gnupg_home() as home:
        _gpg(
            home,
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
            what="gpg key generation",
        )
        secret = _gpg(home, "--armor", "--export-secret-keys", what="gpg export secret").stdout
        _gpg(home, "--yes", "--output", str(public), "--export", what="gpg export public")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    public.chmod(0o644)
    return True


def sign_release(release: Path, key_dir: Path) -> tuple[Path, Path]:
    """Write InRelease (clear-signed) and Release.gpg (armored detached) next to `release`."""
    inrelease, detached = release.with_name("InRelease"), release.with_name("Release.gpg")
    with _gnupg_home() as home:
        _gpg(home, "--import", str(key_dir / PRIVATE_KEY_NAME), what="gpg import")
        sign = ["--yes", "--pinentry-mode", "loopback", "--passphrase", "", "--digest-algo", "SHA512"]
        _gpg(home, *sign, "--clearsign", "--output", str(inrelease), str(release), what="gpg clearsign")
        _gpg(
            home, *sign, "--armor", "--detach-sign", "--output", str(detached), str(release), what="gpg sign"
        )
    return inrelease, detached


def verify(public_key: Path, signed: Path, data: Path | None = None) -> bool:
    """True when `signed` (InRelease, or Release.gpg over `data`) verifies with `public_key` (gpgv)."""
    cmd = ["gpgv", "--keyring", str(public_key), str(signed)] + ([str(data)] if data else [])
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


# ------------------------------------------------------------------------------------- resolution


def extract_base_status(tarball: Path, out: Path) -> bool:
    """Copy var/lib/dpkg/status out of a root tarball; True when `out` changed."""
    result = _run(
        ["tar", "-xOf", str(tarball), "--wildcards", "--no-anchored", "var/lib/dpkg/status"],
        f"reading dpkg status from {tarball}",
    )
    if not result.stdout.startswith("Package:"):
        raise AptRepoError(f"{tarball} holds no var/lib/dpkg/status")
    if out.exists() and out.read_text() == result.stdout:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.stdout)
    return True


def _inherited_apt_settings() -> list[str]:
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=False).stdout
    return [line for line in dump.splitlines() if _INHERITED_APT.match(line)]


@dataclasses.dataclass(frozen=True)
class AptEnv:
    """An apt configuration of its own: base status, sources, lists and archives, nothing from /etc/apt."""

    root: Path
    base_status: Path
    upstream: Upstream

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    def prepare(self) -> None:
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "lists/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.archives / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/sources.list.d/upstream.sources").write_text(self.upstream.sources)
        arch = self.upstream.architecture
        conf = [
            f'Dir::Etc::Parts "{self.root}/etc/apt.conf.d";',
            'Dir::Etc::main "/dev/null";',
            f'Dir::Etc::SourceList "{self.root}/etc/sources.list";',
            f'Dir::Etc::SourceParts "{self.root}/etc/sources.list.d";',
            f'Dir::Etc::Preferences "{self.root}/etc/preferences";',
            f'Dir::Etc::PreferencesParts "{self.root}/etc/preferences.d";',
            f'Dir::State "{self.root}";',
            f'Dir::State::Lists "{self.root}/lists";',
            f'Dir::State::status "{self.base_status}";',
            f'Dir::State::extended_states "{self.root}/extended_states";',
            f'Dir::Cache "{self.root}";',
            f'Dir::Cache::archives "{self.archives}";',
            f'Dir::Cache::pkgcache "{self.root}/pkgcache.bin";',
            f'Dir::Cache::srcpkgcache "{self.root}/srcpkgcache.bin";',
            f'APT::Architecture "{arch}";',
            f'APT::Architectures {{ "{arch}"; }};',
            'APT::Install-Recommends "false";',
            'APT::Install-Suggests "false";',
            'APT::Get::Assume-Yes "true";',
            'APT::Sandbox::User "root";',
            'Debug::NoLocking "true";',  # never touch the controller's dpkg lock; we hold our own
            'Acquire::Languages "none";',
            'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";',
            *_inherited_apt_settings(),
            *self.upstream.apt_options,
        ]
        (self.root / "apt.conf").write_text("\n".join(conf) + "\n")
        (self.root / "etc/sources.list").touch()

    def apt_get(self, *args: str, what: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APT_CONFIG": str(self.root / "apt.conf"), "DEBIAN_FRONTEND": "noninteractive"}
        return _run(["apt-get", "-q", *args], what, env=env)


def _print_uris(env: AptEnv, args: Sequence[str], scratch: Path) -> list[DebRef]:
    """What apt would download for `args`, listed against an empty archive dir (cached files included)."""
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "partial").mkdir(exist_ok=True)
    out = env.apt_get(
        "-o", f"Dir::Cache::archives={scratch}", "--print-uris", *args, what=f"apt-get {' '.join(args)}"
    ).stdout
    return parse_print_uris(out)


def parse_print_uris(out: str) -> list[DebRef]:
    """The .debs in `apt-get --print-uris` output; an unparsable URI line is an error, never skipped."""
    refs = []
    for raw in out.splitlines():
        line = raw.strip()
        if not line.startswith("'"):
            continue
        match = _PRINT_URI.match(line)
        if not match:
            raise AptRepoError(f"unexpected apt-get --print-uris line: {line}")
        if match["file"].endswith(".deb"):
            algo, _, digest = (match["hash"] or "").partition(":")
            refs.append(
                DebRef(match["uri"], match["file"], int(match["size"]), digest if algo == "SHA256" else "")
            )
    return refs


def _cached(archives: Path, ref: DebRef) -> bool:
    path = archives / ref.filename
    return path.is_file() and path.stat().st_size == ref.size


def resolve_and_download(
    packages: Sequence[str], base_status: Path, cache_dir: Path, upstream: Upstream
) -> list[DebRef]:
    """The closure of `packages` (+ pending upgrades of the base) downloaded into `cache_dir`/archives."""
    if not packages:
        raise AptRepoError("no packages requested")
    if not base_status.is_file():
        raise AptRepoError(f"base dpkg status {base_status} does not exist")
    env = AptEnv(cache_dir / f"apt-{upstream.architecture}", base_status, upstream)
    with _locked(cache_dir / ".lock"):
        env.prepare()
        env.apt_get("update", what="apt-get update (upstream)")
        commands = [["install", *packages]]
        if upstream.include_upgrades:
            commands.append(["dist-upgrade"])
        refs: dict[str, DebRef] = {}
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            for number, command in enumerate(commands):
                for ref in _print_uris(env, command, Path(scratch) / str(number)):
                    refs.setdefault(ref.filename, ref)
        if not all(_cached(env.archives, ref) for ref in refs.values()):
            for command in commands:
                env.apt_get("--download-only", *command, what=f"apt-get --download-only {command[0]}")
    for ref in refs.values():
        if not _cached(env.archives, ref):
            raise AptRepoError(f"{ref.filename} missing from the cache after download")
    installed = set(re.findall(r"^Package: (\S+)$", base_status.read_text(), re.M))
    names = {ref.filename.split("_")[0] for ref in refs.values()}
    missing = sorted({name.split(":")[0] for name in packages} - installed - names)
    if missing:  # a requested package neither in the image nor in the closure: never publish that
        raise AptRepoError(f"closure lacks requested packages: {', '.join(missing)}")
    return sorted(refs.values(), key=lambda ref: ref.pool_path)


# ------------------------------------------------------------------------------------------- build


def _sorted_packages(text: str) -> str:
    stanzas = [stanza.strip("\n") for stanza in text.split("\n\n") if stanza.strip()]

    def key(stanza: str) -> tuple[str, str]:
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        return fields.get("Package", ""), fields.get("Filename", "")

    return "".join(stanza + "\n\n" for stanza in sorted(stanzas, key=key))


def build_repository(
    refs: Iterable[DebRef], archives: Path, repo_dir: Path, suite: str, architecture: str
) -> Path:
    """Lay out pool/ (hard links into the cache) and write dists/<suite>/main/binary-<arch>/Packages(.gz).

    Returns the Packages file. The pool holds exactly `refs`; Release is written by `write_release`.
    """
    wanted = {ref.pool_path: archives / ref.filename for ref in refs}
    pool = repo_dir / "pool"
    if pool.exists():
        for existing in pool.rglob("*.deb"):
            if str(existing.relative_to(repo_dir)) not in wanted:
                existing.unlink()
    for rel, source in wanted.items():
        target = repo_dir / rel
        if target.exists() and target.stat().st_size == source.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    binary = repo_dir / "dists" / suite / DEFAULT_COMPONENT / f"binary-{architecture}"
    binary.mkdir(parents=True, exist_ok=True)
    scanned = _run(["apt-ftparchive", "packages", "pool"], "apt-ftparchive packages", cwd=repo_dir).stdout
    packages = binary / "Packages"
    content = _sorted_packages(scanned).encode()
    packages.write_bytes(content)
    with (binary / "Packages.gz").open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(content)
    return packages


def write_release(repo_dir: Path, suite: str, architecture: str, origin: str) -> Path:
    """dists/<suite>/Release over the indices (apt-ftparchive release), with suite metadata."""
    dist = repo_dir / "dists" / suite
    options = {
        "Origin": origin,
        "Label": origin,
        "Suite": suite,
        "Codename": suite,
        "Architectures": architecture,
        "Components": DEFAULT_COMPONENT,
        "Description": "Packages for the private dwh host (closure + base upgrades)",
    }
    cmd = ["apt-ftparchive"]
    for name, value in options.items():
        cmd += ["-o", f"APT::FTPArchive::Release::{name}={value}"]
    for stale in ("Release", "InRelease", "Release.gpg"):
        (dist / stale).unlink(missing_ok=True)
    out = _run([*cmd, "release", "."], "apt-ftparchive release", cwd=dist).stdout
    release = dist / "Release"
    release.write_text(out)
    return release


# ----------------------------------------------------------------------------------------- publish


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
