"""Resolving the private host's packages: the base system's dpkg status, an isolated apt of its own,
and the dependency closure (plus the base's pending upgrades) downloaded into the shared cache."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sbw_ops.apt_repo_base import _INHERITED_APT, _PRINT_URI, AptRepoError, DebRef, Upstream, _locked, _run


def read_base_status(tarball: Path) -> str:
    """The var/lib/dpkg/status of a root tarball (read only)."""
    result = _run(
        ["tar", "-xOf", str(tarball), "--wildcards", "--no-anchored", "var/lib/dpkg/status"],
        f"reading dpkg status from {tarball}",
    )
    if not result.stdout.startswith("Package:"):
        raise AptRepoError(f"{tarball} holds no var/lib/dpkg/status")
    return result.stdout


def extract_base_status(tarball: Path, out: Path) -> bool:
    """Copy var/lib/dpkg/status out of a root tarball; True when `out` changed."""
    status = read_base_status(tarball)
    if out.exists() and out.read_text() == status:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(status)
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
