"""End to end: the whole platform on one machine, through `sbw_ops.platform.up()` / `down()` (what
`make demo` / `make demo-down` run).

sandbox (nspawn webdb + dwh, moto) -> stacks -> the dwh host's private repository -> site.yml ->
local ingest API -> synthetic shoppers -> ETL (the real handler, as a process) -> schedule -> port
forward -> the dashboard in Chromium. Asserted: events sent = events in the S3 objects = rows in the
warehouse (the same event ids) = the KPIs on the dashboard page; a kill -9 of the ETL in the middle of
a run followed by the next run leaves the counts exact; the schedule loads new traffic; a second `up`
(site.yml again) changes nothing on the hosts and the counts still agree; after `down` nothing started
is left running.

The sandbox is a private copy of inventory/sandbox (same group_vars) in its own addresses of
198.18.0.0/24 (webdb 198.18.0.194 in .192/28, dwh 198.18.0.212 in .208/28, AWS service address
198.18.0.227), its own name, state directories, moto, SSM endpoint and port-forward ports, so it never
collides with the default sandbox or the other host suites running at the same time. The host plays
reach the hosts as on AWS: inventory/aws_ec2.yml over amazon.aws.aws_ssm, as ssm-user.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sbw_ops import platform as pf
from sbw_ops import platform_base as pbase
from sbw_ops import platform_etl as etl
from sbw_ops import platform_observe as observe
from sbw_ops.platform_base import PlatformConfig, PlatformState

from tests.ansible_support import LOCAL_CONTROLLER

pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

REPO = Path(__file__).resolve().parents[1]
WEBDB_CIDR, WEBDB_GATEWAY = "198.18.0.194/28", "198.18.0.193"
DWH_CIDR, DWH_GATEWAY = "198.18.0.212/28", "198.18.0.209"


def _inventory(directory: Path) -> Path:
    """inventory/sandbox with the e2e addresses (group_vars shared by symlink)."""
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO / "inventory" / "sandbox" / "group_vars")

    def host(cidr: str, gateway: str, route_out: bool, apt_proxy: Any, name: str, role: str) -> dict:
        return {
            "sandbox_host_address": cidr,
            "sandbox_host_gateway": gateway,
            "sandbox_host_route_out": route_out,
            "sandbox_host_apt_proxy": apt_proxy,
            "sandbox_host_ec2_name": name,
            "sandbox_host_role": role,
        }

    hosts = {
        "all": {
            "hosts": {"localhost": LOCAL_CONTROLLER},
            "children": {
                "sandbox": {
                    "hosts": {
                        "webdb": host(WEBDB_CIDR, WEBDB_GATEWAY, True, True, "SBW_EC2_WebDB", "webdb"),
                        "dwh": host(
                            DWH_CIDR,
                            DWH_GATEWAY,
                            False,
                            "{{ sandbox_dwh_package_source == 'proxy' }}",
                            "SBW_EC2_ShinyDWH",
                            "dwh",
                        ),
                    }
                }
            },
        }
    }
    (inventory / "hosts.yml").write_text(json.dumps(hosts, indent=1))
    return inventory


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and "pytest" not in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`up()` with an e2e configuration; its state directory. `down()` afterwards, and checked gone."""
    base = tmp_path_factory.mktemp("e2e")
    name = f"sbwe{uuid.uuid4().hex[:6]}"
    run_dir = base / "run"
    moto_port = pbase._free_port()
    config = pbase.PlatformConfig(
        inventory=str(_inventory(base)),
        extra_vars={
            "sandbox_name": name,
            "sandbox_state_dir": str(base / "sandbox"),
            "sandbox_run_dir": str(run_dir),
            "sandbox_moto_port": moto_port,
            "sandbox_ssm_endpoint_port": pbase._free_port(),
            "sandbox_aws_address": "198.18.0.227",  # this suite's AWS service address
            "sbw_public_subnet_cidr": "198.18.0.192/28",
            "sbw_private_subnet_cidr": "198.18.0.208/28",
            "sbw_admin_cidrs": [f"{WEBDB_GATEWAY}/32"],
            **pbase.default_config().extra_vars,  # the seed's bucket names, as `make demo`
        },
        moto_port=moto_port,
        run_dir=str(run_dir),
        webdb_address=WEBDB_CIDR.split("/")[0],
        dwh_address=DWH_CIDR.split("/")[0],
        dashboard_port=0,
        traffic_sessions=120,
        traffic_rate=60.0,
        schedule_every_seconds=5.0,
        # A fresh machine (issue 12, point 7): no signing key, no kept base status, no run files, no
        # stacks' facts (the state directory below is new too), so a step that relies on leftovers fails here.
        state_root=str(base / "fresh-state-root"),
    )
    directory = base / "state"
    try:
        pf.up(directory, config)
        yield directory
    finally:
        pids = [int(p["pid"]) for p in PlatformState.load(directory).processes.values()]
        pf.down(directory)
        leftovers = [pid for pid in pids if _alive(pid)]
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert not leftovers, f"still running: {leftovers}"
        assert name not in netns, netns
        assert not _processes_mentioning(name), _processes_mentioning(name)  # nspawn hosts, forwarders
        assert not _processes_mentioning(str(directory)), _processes_mentioning(str(directory))
        assert pbase._port_free(moto_port)  # the sandbox's moto is gone


def _assert_chain_exact(state: PlatformState) -> list[str]:
    """events sent = events in the S3 objects (the keys the API answered) = rows in the warehouse
    (the same event ids, no duplicates); returns the event ids."""
    waves = state.data["traffic"]
    sent = sum(w["accepted_events"] for w in waves)
    assert sent == sum(w["events"] for w in waves) > 0
    objects, s3_ids = observe.s3_event_ids(state)
    assert objects == sum(w["objects_written"] for w in waves)
    assert len(s3_ids) == len(set(s3_ids)) == sent
    dw = observe.warehouse(state)
    assert len(dw["event_ids"]) == len(set(dw["event_ids"]))
    assert set(dw["event_ids"]) == set(s3_ids)
    assert dw["objects"] == {"loaded": objects}
    return s3_ids


def _assert_dashboard_shows(state: PlatformState) -> None:
    """The KPIs read from the page in Chromium = what was sent (all of it is in the last 7 days):
    with the bot toggle on, everything sent; as the page opens (bots excluded), the human events."""
    waves = state.data["traffic"]
    by_name: Counter[str] = Counter()
    for wave in waves:
        by_name.update(wave["events_by_name"])
    kpis = state.data["dashboard"]["kpis_with_bots"]
    assert kpis["events"] == sum(w["accepted_events"] for w in waves) == sum(by_name.values())
    humans = sum(w["accepted_events"] - w.get("bot_events", 0) for w in waves)
    assert state.data["dashboard"]["kpis"]["events"] == humans
    assert kpis["sessions"] == sum(w["sessions"] for w in waves)
    assert kpis["product_views"] == by_name["product_view"]
    assert kpis["add_to_carts"] == by_name["add_to_cart"]
    assert kpis["purchases"] == by_name["purchase"]
    assert Path(state.data["dashboard"]["screenshot"]).stat().st_size > 10_000
    summary = state.data["summary"]
    assert summary["events_sent"] == summary["events_in_objects"] == summary["rows_loaded"]
    assert summary["rows_loaded"] == summary["dashboard_events_with_bots"]
    assert summary["rows_loaded"] - summary["bot_events_sent"] == summary["dashboard_events"]


def test_up_events_sent_equal_s3_equal_warehouse_equal_dashboard(platform: Path) -> None:
    state = PlatformState.load(platform)
    site = state.data["site"]["changed"]
    assert set(site) == {"webdb", "dwh"} and site["webdb"] > 0 and site["dwh"] > 0
    assert state.data["etl_runs"][-1]["status"] == "succeeded"
    assert state.data["etl_runs"][-1]["objects_quarantined"] == 0
    # Everything it kept went to the fresh state root, created by whoever wrote it.
    root = Path(state.data["platform"]["state_root"])
    assert (root / "apt-repo" / "key" / "signing-key.asc").stat().st_mode & 0o777 == 0o600
    assert any((root / "apt-repo").glob("base-status-*"))
    _assert_chain_exact(state)
    _assert_dashboard_shows(state)
    assert state.data["dashboard_url"].startswith("http://127.0.0.1:")
    assert _alive(int(state.processes["etl_schedule"]["pid"]))
    assert _alive(int(state.processes["local_api"]["pid"]))


def test_etl_killed_mid_run_then_next_run_leaves_the_counts_exact(platform: Path) -> None:
    state = PlatformState.load(platform)
    pf.down_processes(state, ("etl_schedule",))  # the schedule would take the run's lock meanwhile
    pf.send_traffic(state, sessions=150)
    before = observe.warehouse(state)
    loaded_before = before["objects"].get("loaded", 0)
    env = {**etl.etl_env(state), "ETL_BATCH_OBJECTS": "2", "ETL_READ_CONCURRENCY": "2"}
    log = platform / "logs" / "etl-killed.log"
    proc = etl.spawn_etl(env, log)
    try:
        # In the middle: at least one batch of this run committed, the run not finished.
        pbase.wait_until(
            lambda: (
                proc.poll() is not None
                or observe.warehouse(state)["objects"].get("loaded", 0) > loaded_before
            ),
            timeout=300,
            what="the ETL run to commit its first batch",
            interval=0.2,
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    middle = observe.warehouse(state)
    total_objects = sum(w["objects_written"] for w in state.data["traffic"])
    assert loaded_before < middle["objects"].get("loaded", 0) < total_objects  # really cut mid-run
    assert len(middle["event_ids"]) == len(set(middle["event_ids"]))

    summary = pbase.wait_until(
        lambda: (s := etl.run_etl_once(state))["status"] == "succeeded" and s,
        timeout=120,
        what="the next run (the killed run's lock released)",
        interval=1.0,
    )
    sent = sum(w["accepted_events"] for w in state.data["traffic"])
    assert summary["rows_inserted"] + len(middle["event_ids"]) == sent
    _assert_chain_exact(state)
    runs = observe.warehouse(state)["runs"]
    assert runs.get("abandoned", 0) + runs.get("failed", 0) >= 1 and "running" not in runs, runs
    pf.step_schedule(state)  # back as `up` left it


def test_the_schedule_loads_new_traffic(platform: Path) -> None:
    state = PlatformState.load(platform)
    runs_before = len(etl.schedule_runs(state))
    pf.send_traffic(state, sessions=60)
    sent = sum(w["accepted_events"] for w in state.data["traffic"])
    pbase.wait_until(
        lambda: len(observe.warehouse(state)["event_ids"]) == sent,
        timeout=300,
        what="the schedule to load it",
    )
    _assert_chain_exact(state)
    assert any(r.get("rows_inserted") for r in etl.schedule_runs(state)[runs_before:])


def test_second_up_converges_with_no_change_on_the_hosts(platform: Path) -> None:
    pf.up(platform)  # what a second `make demo` does: same sandbox, same hosts
    state = PlatformState.load(platform)
    changed = state.data["site"]["changed"]
    assert set(changed) == {"webdb", "dwh"} and not any(changed.values()), changed
    assert state.data["sandbox"]["changed"] == 0  # the running sandbox and its cached root re-used
    assert len(state.data["traffic"]) == 4  # the first up, the two tests above, this up
    _assert_chain_exact(state)
    _assert_dashboard_shows(state)


def test_site_check_mode_runs_to_the_end_and_changes_nothing(platform: Path) -> None:
    """`ansible-playbook site.yml --check` on the converged sandbox: no failure, changed=0 everywhere;
    the private repository's publish really runs in check mode (sbw.ops.apt_repo_publish builds in a
    throw-away directory, uploads nothing) and finds nothing to change."""
    state = PlatformState.load(platform)
    run = pbase.run_playbook(state, "site.yml", options=("--check",))
    recap = run.recap()
    # The hosts by their instance ids: reached through inventory/aws_ec2.yml over SSM.
    assert set(recap) == {"localhost", *pbase.host_names(state)}, run.stdout[-3000:]
    assert all(c["failed"] == 0 and c["changed"] == 0 for c in recap.values()), (recap, run.log)
    header = "Resolve, download, build, sign and publish the repository]"
    assert header in run.stdout, run.stdout[-3000:]
    after = run.stdout.split(header, 1)[1].split("\n", 1)[1].lstrip("\n")
    assert after.startswith("ok: [localhost]"), after[:500]  # ran (not skipped) and unchanged


def test_smoke_playbook_passes_on_the_sandbox(platform: Path) -> None:
    """playbooks/smoke.yml, as an operator runs it after a deploy: both hosts, one event through the
    ingest API and the ETL into the warehouse, the dashboard through a port forward; its row removed.
    Last in this module: its raw object stays (as on AWS), so the counts above would no longer match."""
    state = PlatformState.load(platform)
    pf.down_processes(state, ("etl_schedule",))  # the smoke run's own ETL takes the run lock
    rows_before = set(observe.warehouse(state)["event_ids"])
    wanted = ("DWH_", "ETL_", "AWS_", "RAW_BUCKET", "PYTHONPATH", "POWERTOOLS_")
    etl_env = {k: v for k, v in etl.etl_env(state).items() if k.startswith(wanted)}
    run = pbase.run_playbook(
        state,
        "playbooks/smoke.yml",
        {
            "smoke_ingest_url": f"{state.data['api_url']}/clickstream",
            "smoke_etl_local_environment": etl_env,
            "smoke_dashboard_port": pbase._free_port(),
        },
    )
    names = {name: instance_id for instance_id, name in pbase.host_names(state).items()}
    for check in (
        f"hosts: {names['webdb']}, {names['dwh']} answer",
        "ingest: event",
        "etl: local run",
        "warehouse: the row arrived",
    ):
        assert f"SMOKE PASSED {check}" in run.stdout, run.stdout[-3000:]
    assert "SMOKE PASSED dashboard: 200 through the port forward" in run.stdout
    assert "(1 row)" in run.stdout
    assert set(observe.warehouse(state)["event_ids"]) == rows_before  # its row is gone again
    pf.step_schedule(state)


def _events_by_client(state: PlatformState) -> tuple[dict[str, set[str]], set[str]]:
    """{client_id: {event_id, ...}} of every event in the raw bucket; the days (YYYY-MM-DD) of its keys."""
    config = PlatformConfig.of(state)
    s3 = pbase.s3_client(config)
    bucket = state.data["raw_bucket"]
    by_client: dict[str, set[str]] = {}
    days: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            for line in filter(str.strip, body.splitlines()):
                event = json.loads(line)
                by_client.setdefault(event["client_id"], set()).add(event["event_id"])
            days.add("-".join(item["Key"].split("/")[1:4]))
    return by_client, days


def test_erase_subject_on_the_sandbox(platform: Path) -> None:
    """playbooks/erase_subject.yml on the sandbox, as an operator runs it: one shopper's (client_id)
    events leave the dwh host's warehouse and the raw objects, everyone else's stay, and a backfill of
    the days read from S3 again does not bring them back. Last in this module: it changes the counts."""
    state = PlatformState.load(platform)
    pf.down_processes(state, ("etl_schedule",))  # the backfill below takes the run lock
    by_client, days = _events_by_client(state)
    subject, subject_ids = max(by_client.items(), key=lambda item: len(item[1]))
    others = set().union(*(ids for client, ids in by_client.items() if client != subject))
    rows = set(observe.warehouse(state)["event_ids"])
    assert subject_ids and others and subject_ids <= rows

    # The raw bucket comes from the stacks' facts, as for an operator (no -e sbw_erase_raw_bucket).
    run = pbase.run_playbook(state, "playbooks/erase_subject.yml", {"client_id": subject})
    assert all(c["failed"] == 0 for c in run.recap().values()), run.stdout[-3000:]

    after, _ = _events_by_client(state)
    assert subject not in after and set().union(*after.values()) == others  # raw objects rewritten
    assert set(observe.warehouse(state)["event_ids"]) == rows - subject_ids  # rows gone, the rest kept

    backfill = subprocess.run(
        [sys.executable, "-m", "sbw_clickstream.etl_handler", "--from", min(days), "--to", max(days)],
        cwd=REPO,
        env=etl.etl_env(state),
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    # The backfill brought nothing of the subject back (the smoke test's event, whose row it removed
    # while its raw object stays, may come back: it is not erased).
    reloaded = set(observe.warehouse(state)["event_ids"])
    assert reloaded.isdisjoint(subject_ids) and rows - subject_ids <= reloaded


def _shop(state: PlatformState, new_orders: int = 0) -> dict[str, int]:
    """Adds `new_orders` orders (each of a new user) through the app role, as the shop does; returns the
    shop's row counts {users, orders}."""
    import psycopg2

    config = PlatformConfig.of(state)
    conn = psycopg2.connect(
        host=config.webdb_address,
        port=5432,
        dbname=pbase.OLTP_DB,
        user="sbw_web_app",
        password=pbase.ssm_secret(config, pbase.APP_PASSWORD_PARAM),
        connect_timeout=10,
    )
    try:
        with conn, conn.cursor() as cur:
            for _ in range(new_orders):
                user = f"restore-{uuid.uuid4().hex}"
                cur.execute(
                    "INSERT INTO users (user_id, email) VALUES (%s, %s)", (user, f"{user}@example.com")
                )
                cur.execute("INSERT INTO orders (user_id, total_amount) VALUES (%s, 9.99)", (user,))
            cur.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders), now()::text")
            users, orders, now = cur.fetchone()
    finally:
        conn.close()
    return {"users": users, "orders": orders, "now": now}


def _counts(state: PlatformState) -> dict[str, Any]:
    dw = observe.warehouse(state)
    assert len(dw["event_ids"]) == len(set(dw["event_ids"]))
    shop = _shop(state)
    return {
        "events": set(dw["event_ids"]),
        "objects": dw["objects"],
        "users": shop["users"],
        "orders": shop["orders"],
    }


def _backup(state: PlatformState, backup_type: str) -> None:
    run = pbase.run_playbook(state, "playbooks/backup.yml", {"backup_type": backup_type})
    reports = [line for line in run.stdout.splitlines() if "BACKUP " in line]
    assert len(reports) == 2 and all("none yet" not in line for line in reports), run.stdout[-3000:]


def test_backup_lose_both_hosts_restore_gives_exact_counts_and_the_etl_resumes(platform: Path) -> None:
    """Issue 16 §2: shop rows and events, backed up (playbooks/backup.yml); more of both and a second
    backup; then both hosts and their data volumes are lost (sandbox_state=lost) and booted again empty.
    site.yml refuses to take over the repositories of the lost clusters; playbooks/restore.yml brings
    back exactly what was there (event ids, the ETL's bookkeeping, shop rows); site.yml converges on the
    restored hosts, and the next ETL run loads exactly the new traffic. Then a point-in-time restore to
    a moment between the two backups gives exactly that moment's counts, and the ETL loads again what
    the warehouse had not seen then, once."""
    state = PlatformState.load(platform)
    pf.down_processes(state, ("etl_schedule",))
    etl.run_etl_once(state)  # everything sent so far is loaded
    _shop(state, new_orders=3)
    _backup(state, "full")
    at_first = _counts(state)
    target = _shop(state)["now"]  # the webdb and dwh hosts share this machine's clock
    pf.send_traffic(state, sessions=30)
    assert etl.run_etl_once(state)["rows_inserted"] > 0
    _shop(state, new_orders=2)
    _backup(state, "diff")  # archives the WAL of the second load too
    before = _counts(state)
    assert before["events"] > at_first["events"] and before["orders"] == at_first["orders"] + 2

    lost = pbase.run_playbook(
        state,
        "playbooks/sandbox.yml",
        {"sandbox_state": "lost", "sandbox_lost_hosts": ["webdb", "dwh"]},
        with_facts=False,
        hosts_over_ssm=False,
    )
    assert lost.recap()["localhost"]["changed"] > 0
    pbase.run_playbook(
        state, "playbooks/sandbox.yml", {"sandbox_state": "present"}, with_facts=False, hosts_over_ssm=False
    )
    refused = pbase.run_playbook(state, "site.yml", check=False)
    assert refused.returncode != 0
    assert "holds the backups of another cluster" in refused.stdout, refused.stdout[-3000:]

    pbase.run_playbook(state, "playbooks/restore.yml", {"restore_confirm": True})
    pbase.run_playbook(state, "site.yml")
    after = _counts(state)
    assert after == before

    wave = pf.send_traffic(state, sessions=20)
    summary = etl.run_etl_once(state)
    assert summary["status"] == "succeeded" and summary["rows_inserted"] == wave["accepted_events"] > 0
    resumed = _counts(state)
    assert (
        before["events"] < resumed["events"]
        and len(resumed["events"]) == len(before["events"]) + wave["accepted_events"]
    )

    pbase.run_playbook(state, "playbooks/restore.yml", {"restore_confirm": True, "restore_target": target})
    at_target = _counts(state)
    assert at_target == at_first
    reloaded = etl.run_etl_once(state)
    assert reloaded["status"] == "succeeded"
    assert _counts(state)["events"] == resumed["events"]  # what came after the target, loaded again once
    pf.step_schedule(state)
