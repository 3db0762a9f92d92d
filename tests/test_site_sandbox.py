"""site.yml against the local sandbox: both hosts configured, a second run changes nothing, and the
databases behave as the design says (least privilege, pg_hba).

The sandbox inventory (inventory/sandbox: same groups, same group_vars) is copied with its two hosts
moved to a block of their own (webdb 198.18.0.162 in .160/29, dwh 198.18.0.170 in .168/29), brought up
with playbooks/sandbox.yml under a unique name, state directories and moto port, and torn down at the
end - so it never collides with the default sandbox or another suite. Checks run from the controller
(the operator / Amplify / ETL side: the hosts' gateway addresses) and from inside a host's network
namespace (`nsenter --net`), with the controller's Python and psycopg2.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import yaml

from tests.ansible_support import ansible_env, play_recap
from tests.service_support import free_port

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("sandbox")]

REPO = Path(__file__).resolve().parents[1]
BLOCK = 160  # 198.18.0.160/28: webdb in .160/29, dwh in .168/29
WEBDB = f"198.18.0.{BLOCK + 2}"
DWH = f"198.18.0.{BLOCK + 10}"


def sandbox_inventory(base: Path, block: int) -> tuple[Path, dict[str, Any]]:
    """inventory/sandbox copied under `base` with webdb in 198.18.0.<block>/29 and dwh in the next /29,
    a unique sandbox name, state directories and moto port: (inventory dir, extra vars that go with it,
    network facts included)."""
    inventory = base / "inventory"
    shutil.copytree(REPO / "inventory" / "sandbox", inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    groups = hosts["all"]["children"]["sandbox"]["children"]
    for group, host, offset in (("role_webdb", "webdb", 0), ("role_dwh", "dwh", 8)):
        groups[group]["hosts"][host]["sandbox_host_address"] = f"198.18.0.{block + offset + 2}/29"
        groups[group]["hosts"][host]["sandbox_host_gateway"] = f"198.18.0.{block + offset + 1}"
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    extra = {
        "sandbox_name": f"sbwt{uuid.uuid4().hex[:6]}",
        "sandbox_state_dir": str(base / "state"),
        "sandbox_run_dir": str(base / "run"),
        "sandbox_moto_port": free_port(),
        "sbw_public_subnet_cidr": f"198.18.0.{block}/29",
        "sbw_private_subnet_cidr": f"198.18.0.{block + 8}/29",
        "sbw_admin_cidrs": [f"198.18.0.{block + 1}/32"],
        "sbw_stacks_facts_file": str(base / "stacks-facts.yml"),
    }
    return inventory, extra


def run_playbook(
    playbook: str, inventory: Path, extra_vars: dict[str, Any], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook]
    return subprocess.run(
        [*argv, "-e", json.dumps(extra_vars)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox: its inventory, the extra vars that go with it, its moto endpoint, its run dir."""

    inventory: Path
    extra_vars: dict[str, Any]
    endpoint_url: str
    run_dir: Path
    up: subprocess.CompletedProcess[str]

    def pid(self, host: str) -> int:
        return int((self.run_dir / f"{host}.pid").read_text().split()[0])

    def secret(self, name: str) -> str:
        ssm = boto3.client("ssm", endpoint_url=self.endpoint_url, region_name="ap-southeast-1")
        return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # Fixtures only record results; tests assert them (a failing module fixture would be re-run for
    # every test: eight more sandboxes and site.yml runs).
    inventory, extra = sandbox_inventory(tmp_path_factory.mktemp("site-sandbox"), BLOCK)
    env = ansible_env()
    try:
        up = run_playbook("playbooks/sandbox.yml", inventory, extra, env)
        yield Sandbox(
            inventory,
            extra,
            f"http://127.0.0.1:{extra['sandbox_moto_port']}",
            Path(extra["sandbox_run_dir"]),
            up,
        )
    finally:
        down = run_playbook("playbooks/sandbox.yml", inventory, {**extra, "sandbox_state": "absent"}, env)
        assert down.returncode == 0, down.stdout[-4000:]


@pytest.fixture(scope="module")
def site_runs(sandbox: Sandbox) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """site.yml twice on the sandbox: (first run, second run); a failed step is returned for both."""
    if sandbox.up.returncode != 0:
        return sandbox.up, sandbox.up
    env = ansible_env()
    extra = {**sandbox.extra_vars, "oltp_schema_load_sample_catalog": True}
    first = run_playbook("site.yml", sandbox.inventory, extra, env)
    if first.returncode != 0:
        return first, first
    return first, run_playbook("site.yml", sandbox.inventory, extra, env)


@pytest.fixture
def configured(site_runs: Any) -> None:
    """Both site.yml runs succeeded (else the test fails with the failing run's output)."""
    for run in site_runs:
        assert run.returncode == 0, f"{run.args[:4]} failed:\n{run.stdout[-6000:]}"


def _connect(host: str, db: str, user: str, password: str, **kw: Any) -> Any:
    conn = psycopg2.connect(
        host=host, port=5432, dbname=db, user=user, password=password, connect_timeout=10, **kw
    )
    conn.autocommit = True
    return conn


def _in_host_netns(sandbox: Sandbox, machine: str, code: str, **params: str) -> dict[str, Any]:
    """Run Python `code` (with `params` as globals, psycopg2 imported) inside the host's network
    namespace; it must print one JSON line, which is returned."""
    script = "import json, psycopg2\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items()) + code
    result = subprocess.run(
        ["nsenter", "--target", str(sandbox.pid(machine)), "--net", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_TRY_CONNECT = """
try:
    conn = psycopg2.connect(host=host, port=5432, dbname=db, user=user, password=password, connect_timeout=10)
    conn.autocommit = True
    cur = conn.cursor()
    outcome = {"connected": True, "results": {}}
    for sql in statements.split(";;"):
        try:
            cur.execute(sql)
            outcome["results"][sql] = "ok"
        except psycopg2.Error as exc:
            outcome["results"][sql] = exc.pgcode
except psycopg2.OperationalError as exc:
    outcome = {"connected": False, "error": str(exc)}
print(json.dumps(outcome))
"""


def test_first_run_configures_both_hosts_and_second_run_changes_nothing(
    site_runs: Any, configured: None
) -> None:
    first, second = site_runs
    first_recap = play_recap(first.stdout)
    second_recap = play_recap(second.stdout)
    assert set(first_recap) >= {"webdb", "dwh"}, first.stdout[-3000:]
    assert first_recap["webdb"]["changed"] > 0 and first_recap["dwh"]["changed"] > 0
    assert {host: counts["changed"] for host, counts in second_recap.items()} == dict.fromkeys(
        second_recap, 0
    ), second.stdout[-6000:]
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in second_recap.values())


def test_schemas_are_present(site_runs: Any, configured: None, sandbox: Sandbox) -> None:
    web = _connect(WEBDB, "clickstream_web", "sbw_web_app", sandbox.secret("/sbw/webdb/app_password"))
    with web.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE'"
        )
        tables = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT count(*) FROM products JOIN inventory USING (product_id)")
        catalog_rows = cur.fetchone()[0]
    assert tables >= {"users", "products", "orders", "order_items", "inventory"}
    sample = REPO / "roles" / "oltp_schema" / "files" / "sample_products.csv"
    assert catalog_rows == len(sample.read_text(encoding="utf-8").splitlines()) - 1
    dw = _connect(DWH, "clickstream_dw", "sbw_etl", sandbox.secret("/sbw/dwh/etl_password"))
    with dw.cursor() as cur:
        cur.execute("SELECT to_regclass('public.clickstream_events') IS NOT NULL")
        assert cur.fetchone() == (True,)


def test_etl_user_inserts_events_but_cannot_read_or_delete(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    conn = _connect(DWH, "clickstream_dw", "sbw_etl", sandbox.secret("/sbw/dwh/etl_password"))
    event_id = str(uuid.uuid4())
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO clickstream_events (event_id, event_timestamp, event_name, client_id,"
            " session_id, source_key) VALUES (%s, now(), 'page_view', 'c1', 's1', 'events/test.json')"
            " ON CONFLICT DO NOTHING",
            (event_id,),
        )
        assert cur.rowcount == 1
        for sql in (
            "SELECT count(*) FROM clickstream_events",
            "DELETE FROM clickstream_events",
            "SELECT count(*) FROM schema_migrations",
            "DELETE FROM etl_runs",
            "CREATE TABLE sneaky (x int)",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(sql)


def test_dashboard_user_reads_locally_but_cannot_write_or_connect_remotely(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    password = sandbox.secret("/sbw/dwh/dashboard_password")
    local = _in_host_netns(
        sandbox,
        "dwh",
        _TRY_CONNECT,
        host="127.0.0.1",
        db="clickstream_dw",
        user="sbw_dashboard",
        password=password,
        statements="SELECT count(*) FROM clickstream_events;;"
        "INSERT INTO clickstream_events (event_id, event_timestamp, event_name, client_id, session_id, "
        "source_key) VALUES (gen_random_uuid(), now(), 'x', 'c', 's', 'k');;"
        "DELETE FROM clickstream_events;;UPDATE etl_runs SET error = 'x'",
    )
    assert local["connected"], local
    results = list(local["results"].values())
    assert results[0] == "ok"
    assert results[1:] == ["42501", "42501", "42501"]  # insufficient_privilege
    with pytest.raises(psycopg2.OperationalError, match=r"pg_hba\.conf|rejects connection"):
        _connect(DWH, "clickstream_dw", "sbw_dashboard", password)


def test_etl_user_refused_from_outside_the_private_subnet(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    outcome = _in_host_netns(
        sandbox,
        "dwh",
        _TRY_CONNECT,
        host="127.0.0.1",
        db="clickstream_dw",
        user="sbw_etl",
        password=sandbox.secret("/sbw/dwh/etl_password"),
        statements="SELECT 1",
    )
    assert not outcome["connected"]
    assert re.search(r"pg_hba\.conf|rejects connection", outcome["error"]), outcome


def test_app_role_admitted_from_admin_cidr_with_least_privilege(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    conn = _connect(
        WEBDB, "clickstream_web", "sbw_web_app", sandbox.secret("/sbw/webdb/app_password"), sslmode="require"
    )
    user_id = f"test-{uuid.uuid4().hex}"
    with conn.cursor() as cur:
        cur.execute("INSERT INTO users (user_id, email) VALUES (%s, %s)", (user_id, f"{user_id}@example.com"))
        cur.execute("INSERT INTO orders (user_id) VALUES (%s) RETURNING order_id", (user_id,))
        assert cur.fetchone()[0] > 0
        for sql in ("DELETE FROM products", "DELETE FROM users", "CREATE TABLE sneaky (x int)"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(sql)


def test_app_role_refused_from_a_disallowed_address(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    # From inside webdb to its own address: the source is the host itself, not in sbw_admin_cidrs.
    outcome = _in_host_netns(
        sandbox,
        "webdb",
        _TRY_CONNECT,
        host=WEBDB,
        db="clickstream_web",
        user="sbw_web_app",
        password=sandbox.secret("/sbw/webdb/app_password"),
        statements="SELECT 1",
    )
    assert not outcome["connected"]
    assert re.search(r"pg_hba\.conf|rejects connection", outcome["error"]), outcome


def test_no_secret_in_the_logs(site_runs: Any, configured: None, sandbox: Sandbox) -> None:
    first, second = site_runs
    for name in ("/sbw/webdb/app_password", "/sbw/dwh/etl_password", "/sbw/dwh/dashboard_password"):
        secret = sandbox.secret(name)
        assert secret not in first.stdout and secret not in second.stdout
