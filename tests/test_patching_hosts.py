"""roles/patching on the private dwh host: a newer package published to the private repository is installed
by the next unattended run, and the PostgreSQL restart it asks for waits for the maintenance window.

One dwh host (tests/one_host_support.py, 198.18.0.144/29, no route out, packages only from the signed
repository in its own moto S3). playbooks/private_repo.yml publishes postgresql-15 plus what the roles say
they install (patching_packages among them; the other roles' lists are emptied to keep the closure small);
the host installs PostgreSQL from it and the role runs (twice, then in check mode). Then a rebuilt
postgresql-15 with a higher version (Debian's own .deb and maintainer scripts, only the version changed) is
published from a local upstream, and the host's own timers' units run, as the timers would start them:
apt-daily.service (lists), apt-daily-upgrade.service (unattended-upgrade), sbw-patching-restart.service (the
window). Runs in the `sandbox` xdist group like every nspawn suite.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sbw_ops.apt_repo import DEFAULT_UPSTREAM_SOURCES

from tests.ansible_support import play_recap
from tests.one_host_support import (
    BUCKET,
    PREFIX,
    REPO_ROOT,
    OneHostSandbox,
    create_artifacts_bucket,
    one_host_sandbox,
)

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("sandbox")]

HOST_CIDR = "198.18.0.146/29"
GATEWAY = "198.18.0.145"
WINDOW = "Sat *-*-* 03:30:00 UTC"
BUMP = "+sbwtest1"
MARKER = "/run/sbw-patching/postgresql.restart-needed"
CLUSTER = "postgresql@15-main.service"
# The other roles' package lists, emptied for the publish: the closure is postgresql-15 + patching_packages.
OTHER_ROLE_PACKAGES = {
    "postgresql_extra_packages": [],
    "shiny_server_packages": [],
    "sbw_dashboard_packages": [],
}


def _dwh_patching_vars() -> dict[str, Any]:
    """The patching role's vars in playbooks/dwh.yml (the origin the test must match is the playbook's)."""
    for play in yaml.safe_load((REPO_ROOT / "playbooks" / "dwh.yml").read_text()):
        for role in play.get("roles", []):
            if isinstance(role, dict) and role.get("role") == "patching":
                return role.get("vars", {})
    raise AssertionError("playbooks/dwh.yml runs no patching role")


def _write_play(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def _host_play(tmp: Path) -> Path:
    """apt_private_source, PostgreSQL 15 from the repository, then the role (as playbooks/dwh.yml runs it)."""
    return _write_play(
        tmp / "patching.yml",
        "- hosts: role_dwh\n  gather_facts: false\n  roles:\n    - role: apt_private_source\n"
        "  tasks:\n    - name: Install PostgreSQL from the private repository\n"
        "      ansible.builtin.apt:\n        name: postgresql-15\n"
        "    - name: Patching\n      ansible.builtin.include_role:\n        name: patching\n",
    )


def _rebuild_newer(s3: Any, work: Path) -> tuple[Path, str]:
    """Debian's postgresql-15 .deb as published, rebuilt with BUMP appended to its version, in a flat
    local repository (copy: URI, trusted) that the publish reads as one more upstream."""
    index = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/dists/bookworm/main/binary-amd64/Packages")[
        "Body"
    ].read()
    stanza = next(s for s in index.decode().split("\n\n") if s.startswith("Package: postgresql-15\n"))
    fields = dict(re.findall(r"^(Filename|Version): (\S+)$", stanza, re.M))
    original = work / "original.deb"
    original.write_bytes(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{fields['Filename']}")["Body"].read())
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(original), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    newer = fields["Version"] + BUMP
    control.write_text(re.sub(r"^Version: .*$", f"Version: {newer}", control.read_text(), flags=re.M))
    upstream = work / "upstream"
    upstream.mkdir()
    deb = upstream / f"postgresql-15_{newer}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "."], cwd=upstream, check=True, capture_output=True, text=True
    )
    (upstream / "Packages").write_text(packages.stdout)
    release = subprocess.run(
        ["apt-ftparchive", "release", "."], cwd=upstream, check=True, capture_output=True, text=True
    )
    (upstream / "Release").write_text(release.stdout)
    return upstream, newer


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneHostSandbox]:
    with one_host_sandbox(tmp_path_factory.mktemp("patching"), HOST_CIDR, GATEWAY) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def runs(host: OneHostSandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Publish, a refused window, then the role twice and in check mode; the host's state after each step."""
    s3 = create_artifacts_bucket(host)
    publish = host.playbook(
        REPO_ROOT / "playbooks" / "private_repo.yml",
        apt_repo_publish_packages=["postgresql-15"],
        **OTHER_ROLE_PACKAGES,
    )
    assert publish.returncode == 0, publish.stdout[-5000:]
    tmp = tmp_path_factory.mktemp("plays")
    dwh_vars = _dwh_patching_vars()
    bad_play = _write_play(tmp / "bad.yml", "- hosts: role_dwh\n  gather_facts: false\n  roles: [patching]\n")
    bad = host.playbook(bad_play, **dwh_vars, patching_maintenance_window="every full moon")
    written_after_bad = host.run_in_host(
        "ls", "/etc/apt/apt.conf.d/52sbw-unattended-upgrades", "/usr/sbin/policy-rc.d", "/usr/local/sbin"
    )
    play = _host_play(tmp)
    configure = [host.playbook(play, **dwh_vars, patching_maintenance_window=WINDOW) for _ in range(2)]
    for run in configure:
        assert run.returncode == 0, run.stdout[-5000:]
    check = host.playbook(play, "--check", **dwh_vars, patching_maintenance_window=WINDOW)
    assert check.returncode == 0, check.stdout[-5000:]
    return {
        "s3": s3,
        "bad": bad,
        "written_after_bad": written_after_bad,
        "configure": configure,
        "check": check,
    }


def _version(host: OneHostSandbox) -> str:
    return host.run_in_host("dpkg-query", "-W", "-f=${Version}", "postgresql-15").stdout


def _postmaster(host: OneHostSandbox) -> tuple[int, str]:
    """The cluster's main PID and its /proc/PID/exe (' (deleted)' once the file was replaced)."""
    pid = int(host.run_in_host("systemctl", "show", "--property=MainPID", "--value", CLUSTER).stdout.strip())
    exe = host.run_in_host("readlink", f"/proc/{pid}/exe").stdout.strip()
    return pid, exe


def _answers(host: OneHostSandbox) -> bool:
    query = host.run_in_host("runuser", "-u", "postgres", "--", "psql", "-Atc", "SELECT 42")
    return query.returncode == 0 and query.stdout.strip() == "42"


def test_bad_window_fails_naming_the_variable_and_writes_nothing(runs: dict[str, Any]) -> None:
    bad = runs["bad"]
    assert bad.returncode != 0
    assert "patching_maintenance_window" in bad.stdout and "every full moon" in bad.stdout, bad.stdout[-3000:]
    listing = runs["written_after_bad"]
    assert "No such file" in listing.stderr and "52sbw-unattended-upgrades" in listing.stderr, listing
    assert "policy-rc.d" in listing.stderr and "sbw-patching-restart" not in listing.stdout, listing


def test_second_run_and_check_mode_change_nothing(runs: dict[str, Any]) -> None:
    first, second = runs["configure"]
    assert play_recap(first.stdout)["dwh"]["changed"] >= 5
    assert play_recap(second.stdout)["dwh"]["changed"] == 0, second.stdout[-4000:]
    assert play_recap(runs["check"].stdout)["dwh"]["changed"] == 0, runs["check"].stdout[-4000:]


def test_window_timer_is_scheduled_on_the_window(runs: dict[str, Any], host: OneHostSandbox) -> None:
    timer = host.run_in_host(
        "systemctl",
        "show",
        "--property=ActiveState,UnitFileState,TimersCalendar",
        "sbw-patching-restart.timer",
    )
    assert "ActiveState=active" in timer.stdout and "UnitFileState=enabled" in timer.stdout, timer.stdout
    normalized = host.run_in_host("systemd-analyze", "calendar", WINDOW).stdout
    spec = re.search(r"Normalized form: (.+)", normalized)
    assert spec and f"OnCalendar={spec.group(1).strip()}" in timer.stdout, (timer.stdout, normalized)


def test_unattended_run_installs_the_newer_package_and_the_window_restarts_postgresql(
    runs: dict[str, Any], host: OneHostSandbox, tmp_path: Path
) -> None:
    before_version = _version(host)
    before_pid, before_exe = _postmaster(host)
    assert before_version and not before_version.endswith(BUMP)
    assert before_exe.endswith("/postgres"), before_exe
    assert _answers(host)

    # A security refresh: the operator re-publishes, upstream now carries a newer postgresql-15.
    upstream, newer = _rebuild_newer(runs["s3"], tmp_path)
    sources = f"{DEFAULT_UPSTREAM_SOURCES}\nTypes: deb\nURIs: copy:{upstream}\nSuites: ./\nTrusted: yes\n"
    publish = host.playbook(
        REPO_ROOT / "playbooks" / "private_repo.yml",
        apt_repo_publish_packages=["postgresql-15"],
        apt_repo_publish_upstream_sources=sources,
        **OTHER_ROLE_PACKAGES,
    )
    assert publish.returncode == 0, publish.stdout[-5000:]
    assert play_recap(publish.stdout)["localhost"]["changed"] >= 1

    # What the host's timers start (a day passed: apt.systemd.daily's stamps are cleared).
    host.run_in_host("sh", "-c", "rm -f /var/lib/apt/periodic/*-stamp")
    for unit in ("apt-daily.service", "apt-daily-upgrade.service"):
        started = host.run_in_host("systemctl", "start", unit, timeout=900)
        assert started.returncode == 0, (unit, started.stderr)
    log = host.run_in_host("cat", "/var/log/unattended-upgrades/unattended-upgrades.log").stdout
    assert "origin=sbw-dwh" in log and "postgresql-15" in log, log[-3000:]
    assert _version(host) == newer, log[-3000:]

    # Outside the window: the package is new, the server still the old one (its binary replaced under it).
    pid, exe = _postmaster(host)
    assert pid == before_pid and exe.endswith("(deleted)"), (before_pid, pid, exe)
    assert host.run_in_host("test", "-e", MARKER).returncode == 0
    assert _answers(host)

    # The window: what sbw-patching-restart.timer starts.
    window = host.run_in_host("systemctl", "start", "sbw-patching-restart.service", timeout=300)
    assert window.returncode == 0, window.stderr
    pid, exe = _postmaster(host)
    assert pid != before_pid and exe.endswith("/postgres"), (before_pid, pid, exe)
    assert host.run_in_host("test", "-e", MARKER).returncode == 1
    assert _answers(host)

    # The next window has nothing to do: no needless restart.
    again = host.run_in_host("systemctl", "start", "sbw-patching-restart.service", timeout=300)
    assert again.returncode == 0, again.stderr
    assert _postmaster(host)[0] == pid
    journal = host.run_in_host(
        "journalctl", "-u", "sbw-patching-restart.service", "-o", "cat", "--no-pager"
    ).stdout
    assert "postgresql.service: restarting, its restart was deferred" in journal, journal
    assert "postgresql.service: nothing to restart" in journal, journal
