"""Building the repository tree from the downloaded .debs with apt-ftparchive (sorted stanzas, gzip
without timestamp: the same closure gives byte-identical indices) and its Release file."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sbw_ops.apt_repo_base import DEFAULT_COMPONENT, DebRef, _run


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
