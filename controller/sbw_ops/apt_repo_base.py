"""What the parts of the private repository share (sbw_ops.apt_repo): its constants, the error every
step raises, the values passed between steps (DebRef, Upstream, PublishResult), running a tool and
locking the shared .deb cache."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    # The published `Packages` before this run (None: nothing published) and the one it publishes:
    # the sbw.ops.apt_repo_publish module's diff. Not part of as_dict().
    index_before: bytes | None = None
    index_after: bytes = b""

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
