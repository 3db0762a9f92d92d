"""The private dwh host installs from the signed repository in moto S3, with no route out.

A sandbox of ONE host (the dwh, from the cached root: the "AMI") in its own /29 of 198.18.0.0/24 so it
never collides with the full sandbox of test_site_sandbox.py, no apt proxy (`s3_repo`), its own moto:
playbooks/private_repo.yml publishes a small closure (`hello` + `sl`; the full dwh set is the end-to-end
run's), then roles/apt_private_source makes that repository the host's only source and the host
installs the packages. Runs in the `sandbox` xdist group like every nspawn suite.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

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

HOST_CIDR = "198.18.0.42/29"
HOST = HOST_CIDR.split("/")[0]
GATEWAY = "198.18.0.41"
PACKAGES = ["hello", "sl"]
STANZA = re.compile(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)$", re.M)  # (name, version) per stanza


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneHostSandbox]:
    with one_host_sandbox(tmp_path_factory.mktemp("aptsandbox"), HOST_CIDR, GATEWAY) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def bucket(one_host: OneHostSandbox) -> Any:
    return create_artifacts_bucket(one_host)


@pytest.fixture(scope="module")
def runs(one_host: OneHostSandbox, bucket: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """private_repo.yml, then apt_private_source + install on the host, each twice."""
    publish = [
        one_host.playbook(REPO_ROOT / "playbooks" / "private_repo.yml", apt_repo_publish_packages=PACKAGES)
    ]
    assert publish[0].returncode == 0, publish[0].stdout[-5000:]
    publish.append(
        one_host.playbook(REPO_ROOT / "playbooks" / "private_repo.yml", apt_repo_publish_packages=PACKAGES)
    )
    assert publish[1].returncode == 0, publish[1].stdout[-5000:]
    playbook = tmp_path_factory.mktemp("play") / "dwh_packages.yml"
    playbook.write_text(
        "- hosts: role_dwh\n  gather_facts: false\n  roles:\n    - role: apt_private_source\n"
        "  tasks:\n    - name: Install from the private repository\n      ansible.builtin.apt:\n"
        f"        name: {json.dumps(PACKAGES)}\n"
    )
    configure = [one_host.playbook(playbook) for _ in range(2)]
    for run in configure:
        assert run.returncode == 0, run.stdout[-5000:]
    return {"publish": publish, "configure": configure, "s3": bucket}


def test_republish_and_reconfigure_change_nothing(runs: dict[str, Any]) -> None:
    first_publish, second_publish = runs["publish"]
    assert play_recap(first_publish.stdout)["localhost"]["changed"] >= 1
    assert play_recap(second_publish.stdout)["localhost"]["changed"] == 0, second_publish.stdout[-4000:]
    first, second = runs["configure"]
    assert play_recap(first.stdout)["dwh"]["changed"] >= 3
    assert play_recap(second.stdout)["dwh"]["changed"] == 0, second.stdout[-4000:]


def test_host_installed_the_packages_from_the_private_repository_only(
    runs: dict[str, Any], one_host: OneHostSandbox
) -> None:
    hello = one_host.run_in_host("/usr/bin/hello")
    assert hello.returncode == 0 and hello.stdout.strip() == "Hello, world!"
    assert one_host.run_in_host("test", "-x", "/usr/games/sl").returncode == 0
    sources = one_host.run_in_host(
        "sh", "-c", "ls /etc/apt/sources.list.d; grep -v '^#' /etc/apt/sources.list || true"
    )
    assert sources.stdout.split() == ["sbw-private.list"], sources.stdout
    policy = one_host.run_in_host("apt-cache", "policy", "hello")
    origin = f"http://{GATEWAY}:{one_host.extra_vars['sandbox_moto_port']}/{BUCKET}/{PREFIX} bookworm/main"
    assert origin in policy.stdout and "deb.debian.org" not in policy.stdout, policy.stdout


def test_repository_holds_what_the_image_lacks_and_nothing_it_has_current(
    runs: dict[str, Any], one_host: OneHostSandbox
) -> None:
    packages = runs["s3"].get_object(Bucket=BUCKET, Key=f"{PREFIX}/dists/bookworm/main/binary-amd64/Packages")
    published = dict(STANZA.findall(packages["Body"].read().decode()))
    assert set(PACKAGES) <= set(published)
    base = one_host.repo_dir.glob("base-status-*")
    status = dict(STANZA.findall(next(base).read_text()))
    for name, version in published.items():
        if name in status:  # only pending upgrades of base packages, never what the image already has
            newer = subprocess.run(["dpkg", "--compare-versions", version, "gt", status[name]], check=False)
            assert newer.returncode == 0, (name, version, status[name])


def test_dwh_host_reaches_nothing_but_its_gateway(runs: dict[str, Any], one_host: OneHostSandbox) -> None:
    routes = one_host.run_in_host("ip", "-4", "route", "show", net_only=True)
    assert "default" not in routes.stdout and routes.stdout.strip(), routes.stdout
    probe = (
        "import socket, sys, json\n"
        "out = {}\n"
        "for host, port in json.loads(sys.argv[1]):\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port)); out[f'{host}:{port}'] = 'open'\n"
        "    except OSError as exc:\n"
        "        out[f'{host}:{port}'] = type(exc).__name__ + ':' + str(exc.errno)\n"
        "    finally:\n"
        "        s.close()\n"
        "print(json.dumps(out))\n"
    )
    moto = int(one_host.extra_vars["sandbox_moto_port"])
    targets = [
        [GATEWAY, moto],  # the S3 stand-in: the one way out
        ["198.18.0.1", moto],  # the public subnet's gateway (another subnet)
        ["198.18.0.10", 5432],  # the public host
        ["151.101.2.132", 80],  # deb.debian.org's CDN: the internet
        [GATEWAY, 22],  # the gateway itself, any other port
    ]
    result = one_host.run_in_host("python3", "-c", probe, json.dumps(targets))
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome.pop(f"{GATEWAY}:{moto}") == "open"
    assert all(value != "open" for value in outcome.values()), outcome
    unreachable = [
        outcome["198.18.0.1:" + str(moto)],
        outcome["198.18.0.10:5432"],
        outcome["151.101.2.132:80"],
    ]
    assert all(value == "OSError:101" for value in unreachable), outcome  # ENETUNREACH: no route at all
