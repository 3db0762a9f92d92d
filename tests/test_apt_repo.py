"""The private host's apt repository (sbw_ops.apt_repo + roles/apt_repo_publish) against moto S3.

Real apt, apt-ftparchive, gpg and gpgv on the controller; real Debian packages from the mirror (a small
closure: `hello`, later `sl`, cached under /var/cache/sbw-sandbox/apt-repo); moto only for S3. The full
dwh closure (~650 packages) is left to the end-to-end run; the nspawn host test is test_apt_repo_hosts.py.

The base dpkg status here is synthetic (tests/apt_repo_support.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sbw_ops import apt_repo

from tests.ansible_support import play_recap
from tests.apt_repo_support import BASE_STATUS, SMALL_BASE_OPTIONS
from tests.fixtures.moto import S3Bucket, create_bucket, make_client

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "repo"
PACKAGES_KEY = f"{PREFIX}/dists/bookworm/main/binary-amd64/Packages"
UPSTREAM = apt_repo.Upstream(apt_options=SMALL_BASE_OPTIONS)


@dataclass
class PutCounter:
    """Counts the S3 PUTs a client really sends (a botocore event hook, independent of our code)."""

    keys: list[str]

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.keys.append(params["Key"])


def count_puts(client: Any) -> PutCounter:
    counter = PutCounter([])
    client.meta.events.register("before-parameter-build.s3.PutObject", counter)
    return counter


@pytest.fixture(scope="session")
def base_status(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "status"
    path.write_text(BASE_STATUS)
    return path


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("key") / "key"
    assert apt_repo.ensure_signing_key(directory) is True
    return directory


def _publish(
    bucket: S3Bucket, packages: list[str], base: Path, keys: Path, repo_dir: Path
) -> apt_repo.PublishResult:
    return apt_repo.build_and_publish(
        bucket.client,
        packages,
        base,
        bucket.name,
        PREFIX,
        keys,
        repo_dir=repo_dir,
        upstream=UPSTREAM,
    )


def _stanzas(packages: bytes) -> dict[str, dict[str, str]]:
    found = {}
    for stanza in packages.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields:
            found[fields["Package"]] = fields
    return found


def test_pool_path_drops_the_epoch_like_debian() -> None:
    ref = apt_repo.DebRef(
        "http://x/pool/main/u/util-linux/bsdutils.deb", "bsdutils_1%3a2.38.1-5_amd64.deb", 1, ""
    )
    assert ref.pool_path == "pool/main/b/bsdutils_2.38.1-5_amd64.deb"
    lib = apt_repo.DebRef("u", "libc6_2.36-9+deb12u14_amd64.deb", 1, "")
    assert lib.pool_path == "pool/main/libc/libc6_2.36-9+deb12u14_amd64.deb"


def test_print_uris_lines_without_hash_are_kept_and_garbage_is_an_error() -> None:
    out = (
        "Reading package lists...\n"
        "'http://deb.debian.org/debian-security/pool/updates/main/p/postgresql-15/postgresql-15_15.20-0%2bdeb12u1_amd64.deb'"
        " postgresql-15_15.20-0+deb12u1_amd64.deb 17091392 \n"
        "'http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb' hello_2.10-3_amd64.deb 53080"
        " SHA256:abc123\n"
    )
    refs = apt_repo.parse_print_uris(out)
    assert [(ref.filename, ref.size, ref.sha256) for ref in refs] == [
        ("postgresql-15_15.20-0+deb12u1_amd64.deb", 17091392, ""),
        ("hello_2.10-3_amd64.deb", 53080, "abc123"),
    ]
    with pytest.raises(apt_repo.AptRepoError, match="unexpected"):
        apt_repo.parse_print_uris("'http://x/y.deb' y.deb not-a-size\n")


def test_signing_key_is_ed25519_made_once_and_private_half_owner_only(key_dir: Path) -> None:
    private, public = key_dir / apt_repo.PRIVATE_KEY_NAME, key_dir / apt_repo.PUBLIC_KEY_NAME
    before = private.read_bytes()
    assert apt_repo.ensure_signing_key(key_dir) is False
    assert private.read_bytes() == before
    assert private.stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--show-keys", str(public)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pub = next(line for line in listing.splitlines() if line.startswith("pub:"))
    assert pub.split(":")[3] == "22"  # OpenPGP algorithm 22 = EdDSA (ed25519)


def test_closure_carries_the_base_systems_pending_upgrades_only_when_asked(base_status: Path) -> None:
    with_upgrades = apt_repo.resolve_and_download(
        ["hello"], base_status, apt_repo.DEFAULT_CACHE_DIR, UPSTREAM
    )
    names = {ref.filename.split("_")[0] for ref in with_upgrades}
    assert {"hello", "libc6"} <= names
    base_files = [ref for ref in with_upgrades if ref.filename.startswith("base-files_")]
    assert base_files and not base_files[0].filename.startswith("base-files_12.4_")  # a newer point release
    without = apt_repo.resolve_and_download(
        ["hello"],
        base_status,
        apt_repo.DEFAULT_CACHE_DIR,
        apt_repo.Upstream(include_upgrades=False, apt_options=SMALL_BASE_OPTIONS),
    )
    assert "base-files" not in {ref.filename.split("_")[0] for ref in without}
    for ref in with_upgrades:  # downloaded into the persistent cache
        assert (
            apt_repo.DEFAULT_CACHE_DIR / "apt-amd64" / "archives" / ref.filename
        ).stat().st_size == ref.size


@dataclass(frozen=True)
class Published:
    """`hello` published once into a fresh bucket: the bucket, the result, the keys PUT (in order)."""

    bucket: S3Bucket
    result: apt_repo.PublishResult
    put_keys: list[str]
    repo_dir: Path


@pytest.fixture(scope="module")
def published(
    moto_endpoint_url: str, base_status: Path, key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Published:
    client = make_client("s3", moto_endpoint_url)
    bucket = S3Bucket(create_bucket(client), client, moto_endpoint_url)
    puts = count_puts(client)
    repo_dir = tmp_path_factory.mktemp("published") / "repo"
    result = _publish(bucket, ["hello"], base_status, key_dir, repo_dir)
    return Published(bucket, result, list(puts.keys), repo_dir)


def test_publish_uploads_the_pool_first_and_the_indices_last(published: Published) -> None:
    bucket, first, keys = published.bucket, published.result, published.put_keys
    assert first.changed and first.packages >= 4
    debs = [key for key in keys if key.endswith(".deb")]
    assert len(debs) == first.packages
    assert keys[: len(debs)] == debs
    assert keys[len(debs) :] == [
        PACKAGES_KEY,
        f"{PACKAGES_KEY}.gz",
        f"{PREFIX}/dists/bookworm/Release",
        f"{PREFIX}/dists/bookworm/Release.gpg",
        f"{PREFIX}/dists/bookworm/InRelease",
    ]
    # every Packages stanza names an object whose bytes match its SHA256
    packages = bucket.read(PACKAGES_KEY)
    assert gzip.decompress(bucket.read(f"{PACKAGES_KEY}.gz")) == packages
    stanzas = _stanzas(packages)
    assert {"hello", "libc6", "base-files"} <= set(stanzas)
    for fields in stanzas.values():
        body = bucket.read(f"{PREFIX}/{fields['Filename']}")
        assert hashlib.sha256(body).hexdigest() == fields["SHA256"]


def test_republish_with_nothing_new_uploads_nothing(
    s3_bucket: S3Bucket, base_status: Path, key_dir: Path, tmp_path: Path
) -> None:
    first = _publish(s3_bucket, ["hello"], base_status, key_dir, tmp_path / "repo")
    assert first.changed
    puts = count_puts(s3_bucket.client)
    second = _publish(s3_bucket, ["hello"], base_status, key_dir, tmp_path / "repo")
    assert puts.keys == []
    assert not second.changed and second.packages == first.packages


def test_republish_with_a_new_package_uploads_only_its_new_debs(
    s3_bucket: S3Bucket, base_status: Path, key_dir: Path, tmp_path: Path
) -> None:
    _publish(s3_bucket, ["hello"], base_status, key_dir, tmp_path / "repo")
    before = set(s3_bucket.keys(f"{PREFIX}/pool/"))
    puts = count_puts(s3_bucket.client)
    result = _publish(s3_bucket, ["hello", "sl"], base_status, key_dir, tmp_path / "repo")
    after = set(s3_bucket.keys(f"{PREFIX}/pool/"))
    new = after - before
    assert {key.rsplit("/", 1)[1].split("_")[0] for key in new} >= {"sl", "libncurses6", "libtinfo6"}
    assert sorted(key for key in puts.keys if key.endswith(".deb")) == sorted(new)
    assert len(puts.keys) == len(new) + 5 and result.uploaded_debs == sorted(
        k.removeprefix(f"{PREFIX}/") for k in new
    )
    assert {"sl", "hello"} <= set(_stanzas(s3_bucket.read(PACKAGES_KEY)))


def test_signatures_verify_with_gpgv_against_the_published_key_only(
    published: Published, key_dir: Path, tmp_path: Path
) -> None:
    s3_bucket = published.bucket
    got = tmp_path / "got"
    got.mkdir()
    for name in ("InRelease", "Release", "Release.gpg"):
        (got / name).write_bytes(s3_bucket.read(f"{PREFIX}/dists/bookworm/{name}"))
    public = key_dir / apt_repo.PUBLIC_KEY_NAME

    def gpgv(*files: Path, keyring: Path = public) -> int:
        cmd = ["gpgv", "--keyring", str(keyring), *map(str, files)]
        return subprocess.run(cmd, capture_output=True, check=False).returncode

    assert gpgv(got / "InRelease") == 0
    assert gpgv(got / "Release.gpg", got / "Release") == 0
    # the signed Release names the published Packages by its hash
    digest = hashlib.sha256(s3_bucket.read(PACKAGES_KEY)).hexdigest()
    assert re.search(rf"^ {digest} +\d+ main/binary-amd64/Packages$", (got / "InRelease").read_text(), re.M)
    # a tampered Release or another key does not verify
    (got / "Release").write_text((got / "Release").read_text().replace("bookworm", "bookwarm"))
    assert gpgv(got / "Release.gpg", got / "Release") != 0
    other = tmp_path / "other"
    apt_repo.ensure_signing_key(other)
    assert gpgv(got / "InRelease", keyring=other / apt_repo.PUBLIC_KEY_NAME) != 0


def _grant_anonymous_repo_reads(bucket: S3Bucket) -> None:
    """The storage stack's repository statement (moto ignores its aws:sourceVpce condition)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AptRepositoryThroughGatewayEndpointOnly",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket.name}/{PREFIX}/*",
                "Condition": {"StringEquals": {"aws:sourceVpce": "vpce-0123456789abcdef0"}},
            }
        ],
    }
    bucket.client.put_bucket_policy(Bucket=bucket.name, Policy=json.dumps(policy))


def _apt_client(tmp_path: Path, url: str, keyring: Path) -> apt_repo.AptEnv:
    """An isolated apt whose only source is the published repository (what the dwh host runs)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    empty = tmp_path / "empty-status"
    empty.write_text("")
    sources = f"Types: deb\nURIs: {url}\nSuites: bookworm\nComponents: main\nSigned-By: {keyring}\n"
    env = apt_repo.AptEnv(
        tmp_path / "client", empty, apt_repo.Upstream(sources=sources, apt_options=SMALL_BASE_OPTIONS)
    )
    env.prepare()
    return env


def test_apt_installs_from_the_published_repository_anonymously(
    published: Published, key_dir: Path, tmp_path: Path
) -> None:
    s3_bucket = published.bucket
    _grant_anonymous_repo_reads(s3_bucket)
    url = f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{PREFIX}"
    # no credentials: what the host's apt sends
    with urllib.request.urlopen(f"{url}/dists/bookworm/InRelease", timeout=10) as response:  # noqa: S310
        assert response.status == 200 and b"BEGIN PGP SIGNED MESSAGE" in response.read()

    client = _apt_client(tmp_path, url, key_dir / apt_repo.PUBLIC_KEY_NAME)
    client.apt_get("update", "-o", "APT::Update::Error-Mode=any", what="apt-get update (private repo)")
    client.apt_get("--download-only", "install", "hello", what="apt-get install from the private repo")
    fetched = sorted(path.name for path in client.archives.glob("*.deb"))
    assert any(name.startswith("hello_") for name in fetched) and any(
        name.startswith("libc6_") for name in fetched
    )

    # the same repository with a key that did not sign it is refused by apt
    other = tmp_path / "other-key"
    apt_repo.ensure_signing_key(other)
    stranger = _apt_client(tmp_path / "stranger", url, other / apt_repo.PUBLIC_KEY_NAME)
    with pytest.raises(apt_repo.AptRepoError, match=r"NO_PUBKEY|not signed|signatures? (were|was) invalid"):
        stranger.apt_get("update", "-o", "APT::Update::Error-Mode=any", what="apt-get update (wrong key)")


def _run_role(
    tmp_path: Path, bucket: S3Bucket, base_status: Path, key_dir: Path, cache_root: Path
) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "publish.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: apt_repo_publish\n",
    )
    extra = {
        "apt_repo_publish_packages": ["hello"],
        "apt_repo_publish_bucket": bucket.name,
        "apt_repo_publish_prefix": PREFIX,
        "apt_repo_publish_endpoint_url": bucket.endpoint_url,
        "apt_repo_publish_base_source": "file",
        "apt_repo_publish_base_status": str(base_status),
        "apt_repo_publish_key_dir": str(key_dir),
        "apt_repo_publish_apt_options": list(SMALL_BASE_OPTIONS),
        "apt_repo_publish_install_tools": False,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        # The one setting that moves the content-keyed caches (playbooks/group_vars/all sbw_cache_root).
        "SBW_CACHE_ROOT": str(cache_root),
    }
    return subprocess.run(
        [
            str(Path(os.environ.get("VIRTUAL_ENV", REPO_ROOT / ".venv")) / "bin" / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            json.dumps(extra),
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
        check=False,
    )


def test_role_publishes_and_second_run_changes_nothing(
    s3_bucket: S3Bucket, base_status: Path, tmp_path: Path
) -> None:
    fresh_key_dir = tmp_path / "role-key"
    # A fresh machine: no cache directory yet; the role creates what it writes into.
    fresh_cache = tmp_path / "fresh-cache-root"
    first = _run_role(tmp_path, s3_bucket, base_status, fresh_key_dir, fresh_cache)
    assert first.returncode == 0, first.stdout[-4000:]
    assert any((fresh_cache / "apt-repo" / "apt-amd64" / "archives").glob("hello_*.deb"))
    assert play_recap(first.stdout)["localhost"]["changed"] >= 2  # key generated, repository published
    assert (fresh_key_dir / apt_repo.PRIVATE_KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert f"{PREFIX}/dists/bookworm/InRelease" in s3_bucket.keys(PREFIX)
    # S3 stand-in: the role put the stack's anonymous-read statement on the prefix (and only there)
    policy = json.loads(s3_bucket.client.get_bucket_policy(Bucket=s3_bucket.name)["Policy"])
    assert [item["Resource"] for item in policy["Statement"]] == [f"arn:aws:s3:::{s3_bucket.name}/{PREFIX}/*"]
    url = f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{PREFIX}/dists/bookworm/InRelease"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - anonymous, like apt
        assert response.status == 200
    second = _run_role(tmp_path, s3_bucket, base_status, fresh_key_dir, fresh_cache)
    assert second.returncode == 0, second.stdout[-4000:]
    assert play_recap(second.stdout)["localhost"]["changed"] == 0, second.stdout[-4000:]
