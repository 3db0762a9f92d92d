"""The private repository's signing key (ed25519, generated once on the controller, private half 0600)
and the signatures made and checked with it: InRelease, Release.gpg (gpg in a throw-away home, gpgv)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sbw_ops.apt_repo_base import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, AptRepoError, _run


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
