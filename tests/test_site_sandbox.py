"""site.yml against the local sandbox: both hosts configured, a second run changes nothing, and the
databases behave as the design says (least privilege, pg_hba). The host plays reach the hosts as an
operator's do on AWS: through inventory/aws_ec2.yml (the hosts stack's instances, in moto) over the
real amazon.aws.aws_ssm connection, as ssm-user, with the sandbox's aws-env.json as the environment.

The sandbox inventory (inventory/sandbox: same group_vars) is copied with its two hosts moved to a
block of their own (webdb 198.18.0.162 in .160/29, dwh 198.18.0.170 in .168/29, AWS service address
198.18.0.226), brought up with playbooks/sandbox.yml under a unique name, state directories, moto and
SSM endpoint ports, and torn down at the end - so it never collides with the default sandbox or
another suite. Checks run from the controller
(the operator / Amplify / ETL side: the hosts' gateway addresses) and from inside a host's network
namespace (`nsenter --net`), with the controller's Python and psycopg2.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import yaml
from sbw_ops.platform_base import AWS_INVENTORY, sandbox_env

from tests.ansible_support import ansible_env, play_recap, unwrap_unsafe
from tests.service_support import free_port

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("sandbox")]

REPO = Path(__file__).resolve().parents[1]
BLOCK = 160  # 198.18.0.160/28: webdb in .160/29, dwh in .168/29
WEBDB = f"198.18.0.{BLOCK + 2}"
DWH = f"198.18.0.{BLOCK + 10}"
AWS_ADDRESS = "198.18.0.226"  # this suite's AWS service address (198.18.0.224/29: one per sandbox)


def sandbox_inventory(base: Path, block: int, aws_address: str) -> tuple[Path, dict[str, Any]]:
    """inventory/sandbox copied under `base` with webdb in 198.18.0.<block>/29 and dwh in the next /29,
    a unique sandbox name, state directories, moto and SSM endpoint ports: (inventory dir, extra vars
    that go with it, network facts included)."""
    inventory = base / "inventory"
    shutil.copytree(REPO / "inventory" / "sandbox", inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    layout = hosts["all"]["children"]["sandbox"]["hosts"]
    for host, offset in (("webdb", 0), ("dwh", 8)):
        layout[host]["sandbox_host_address"] = f"198.18.0.{block + offset + 2}/29"
        layout[host]["sandbox_host_gateway"] = f"198.18.0.{block + offset + 1}"
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    extra = {
        "sandbox_name": f"sbwt{uuid.uuid4().hex[:6]}",
        "sandbox_state_dir": str(base / "state"),
        "sandbox_run_dir": str(base / "run"),
        "sandbox_moto_port": free_port(),
        "sandbox_ssm_endpoint_port": free_port(),
        "sandbox_aws_address": aws_address,
        "sbw_public_subnet_cidr": f"198.18.0.{block}/29",
        "sbw_private_subnet_cidr": f"198.18.0.{block + 8}/29",
        "sbw_admin_cidrs": [f"198.18.0.{block + 1}/32"],
        "sbw_stacks_facts_file": str(base / "stacks-facts.yml"),
    }
    return inventory, extra


def run_playbook(
    playbook: str,
    inventory: Path,
    extra_vars: dict[str, Any],
    env: dict[str, str],
    *,
    over_ssm: bool = True,
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook with the sandbox inventory; `over_ssm`: the operator's way to the hosts."""
    return run_ansible("ansible-playbook", [playbook], inventory, extra_vars, env, over_ssm=over_ssm)


def run_ansible(
    command: str,
    args: list[str],
    inventory: Path,
    extra_vars: dict[str, Any],
    env: dict[str, str],
    *,
    over_ssm: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`command` (ansible-playbook, ansible, ansible-inventory) with the sandbox inventory and, when
    `over_ssm`, inventory/aws_ec2.yml and the sandbox's environment (its aws-env.json)."""
    argv = [str(Path(sys.executable).parent / command), "-i", str(inventory)]
    if over_ssm:
        argv += ["-i", str(REPO / AWS_INVENTORY)]
        aws = sandbox_env(extra_vars["sandbox_run_dir"])
        env = {k: v for k, v in env.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
        env |= {**aws, "PATH": f"{Path(sys.executable).parent}:{aws['PATH']}"}
    extra = [] if command == "ansible-inventory" else ["-e", json.dumps(extra_vars)]
    return subprocess.run(
        [*argv, *args, *extra],
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

    def instance_ids(self) -> dict[str, str]:
        """webdb / dwh -> the hosts stack's instance id (their names in inventory/aws_ec2.yml)."""
        facts = yaml.safe_load(Path(self.extra_vars["sbw_stacks_facts_file"]).read_text())
        return {"webdb": facts["sbw_webdb_instance_id"], "dwh": facts["sbw_dwh_instance_id"]}

    def pid(self, host: str) -> int:
        return int((self.run_dir / f"{host}.pid").read_text().split()[0])

    def secret(self, name: str) -> str:
        ssm = boto3.client("ssm", endpoint_url=self.endpoint_url, region_name="ap-southeast-1")
        return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # Fixtures only record results; tests assert them (a failing module fixture would be re-run for
    # every test: eight more sandboxes and site.yml runs).
    inventory, extra = sandbox_inventory(tmp_path_factory.mktemp("site-sandbox"), BLOCK, AWS_ADDRESS)
    env = ansible_env()
    try:
        up = run_playbook("playbooks/sandbox.yml", inventory, extra, env, over_ssm=False)
        yield Sandbox(
            inventory,
            extra,
            f"http://127.0.0.1:{extra['sandbox_moto_port']}",
            Path(extra["sandbox_run_dir"]),
            up,
        )
    finally:
        down = run_playbook(
            "playbooks/sandbox.yml", inventory, {**extra, "sandbox_state": "absent"}, env, over_ssm=False
        )
        assert down.returncode == 0, down.stdout[-4000:]


@pytest.fixture(scope="module")
def site_runs(sandbox: Sandbox) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """site.yml twice on the sandbox: (first run, second run); a failed step is returned for both.
    The seconds each took are printed (pytest -s), the figure docs/development.md quotes."""
    if sandbox.up.returncode != 0:
        return sandbox.up, sandbox.up
    env = ansible_env()
    extra = {**sandbox.extra_vars, "oltp_schema_load_sample_catalog": True}
    started = time.monotonic()
    first = run_playbook("site.yml", sandbox.inventory, extra, env)
    if first.returncode != 0:
        return first, first
    middle = time.monotonic()
    second = run_playbook("site.yml", sandbox.inventory, extra, env)
    print(f"site.yml over SSM: first run {middle - started:.0f} s, second {time.monotonic() - middle:.0f} s")
    return first, second


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
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    first, second = site_runs
    first_recap = play_recap(first.stdout)
    second_recap = play_recap(second.stdout)
    webdb, dwh = sandbox.instance_ids()["webdb"], sandbox.instance_ids()["dwh"]
    # The hosts by their instance ids: inventory/aws_ec2.yml, not the sandbox's layout names.
    assert set(first_recap) == {"localhost", webdb, dwh}, first.stdout[-3000:]
    assert first_recap[webdb]["changed"] > 0 and first_recap[dwh]["changed"] > 0
    assert {host: counts["changed"] for host, counts in second_recap.items()} == dict.fromkeys(
        second_recap, 0
    ), second.stdout[-6000:]
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in second_recap.values())


def test_host_plays_reach_the_hosts_over_aws_ssm_as_ssm_user(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    """What the host plays connect with: inventory/aws_ec2.yml's hosts (the stacks' instance ids),
    amazon.aws.aws_ssm through the sandbox's session-manager-plugin, as ssm-user; root only by sudo."""
    ids = sandbox.instance_ids()
    env = ansible_env()
    listing = run_ansible("ansible-inventory", ["--list"], sandbox.inventory, sandbox.extra_vars, env)
    assert listing.returncode == 0, listing.stderr[-3000:]
    inventory = unwrap_unsafe(json.loads(listing.stdout))
    hostvars = inventory["_meta"]["hostvars"]
    for group, name in (("role_webdb", "webdb"), ("role_dwh", "dwh")):
        assert inventory[group]["hosts"] == [ids[name]]
        assert hostvars[ids[name]]["ansible_connection"] == "amazon.aws.aws_ssm"
        assert hostvars[ids[name]]["ansible_aws_ssm_bucket_endpoint_url"] == f"http://{AWS_ADDRESS}:" + str(
            sandbox.extra_vars["sandbox_moto_port"]
        )
    for become, user in (([], "ssm-user"), (["--become"], "root")):
        args = ["role_webdb:role_dwh", "-m", "ansible.builtin.command", "-a", "id -un", *become]
        who = run_ansible("ansible", args, sandbox.inventory, sandbox.extra_vars, env)
        assert who.returncode == 0, who.stdout[-3000:]
        for instance_id in ids.values():
            assert re.search(rf"^{instance_id} \| CHANGED \| rc=0 >>\n{user}$", who.stdout, re.M), who.stdout


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
    for name in (
        "/sbw/webdb/app_password",
        "/sbw/dwh/etl_password",
        "/sbw/dwh/dashboard_password",
        "/sbw/webdb/pgbackrest_cipher_pass",
        "/sbw/dwh/pgbackrest_cipher_pass",
    ):
        secret = sandbox.secret(name)
        assert secret not in first.stdout and secret not in second.stdout


def test_both_hosts_archive_wal_and_hold_a_first_full_backup_in_their_own_prefix(
    site_runs: Any, configured: None, sandbox: Sandbox
) -> None:
    """roles/pgbackrest through site.yml: each host's repository under its own prefix of the backup bucket
    (in moto, reached over TLS), encrypted, with the first full backup and archived WAL."""
    facts = yaml.safe_load(Path(sandbox.extra_vars["sbw_stacks_facts_file"]).read_text())
    s3 = boto3.client("s3", endpoint_url=sandbox.endpoint_url, region_name="ap-southeast-1")
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=facts["sbw_backup_bucket"])
        for item in page.get("Contents", [])
    ]
    for prefix in ("webdb", "dwh"):
        assert any(k.startswith(f"{prefix}/backup/main/") and "F/" in k for k in keys), (prefix, keys[:20])
        assert any(k.startswith(f"{prefix}/archive/main/") for k in keys), prefix
    assert {k.split("/")[0] for k in keys} == {"webdb", "dwh"}
    info = s3.get_object(Bucket=facts["sbw_backup_bucket"], Key="webdb/backup/main/backup.info")[
        "Body"
    ].read()
    assert b"[backup:current]" not in info  # encrypted: pgBackRest's plain info file is an INI text
