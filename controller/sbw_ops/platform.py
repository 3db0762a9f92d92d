"""The whole platform on one machine: the steps of `make demo` (and of tests/test_e2e.py), as plain functions.

    python -m sbw_ops.platform up        # every step of UP_STEPS, leaves the platform running
    python -m sbw_ops.platform down      # DOWN_STEPS: port forward, scheduler, local API, sandbox absent
    python -m sbw_ops.platform schedule --state-dir DIR --every 60   # the ETL "hourly" schedule (background)

Order of `up`: sandbox (playbooks/sandbox.yml: nspawn hosts webdb/dwh, moto on its AWS service address,
the SSM endpoint stand-in) -> site.yml (the stacks against the sandbox's moto, the dwh host's private
apt repository, both hosts as the hosts stack's EC2 instances over amazon.aws.aws_ssm; dwh from
that repository) -> local ingest API (the real handler, writing to the stacks' raw bucket in the
sandbox's moto) -> synthetic traffic
(sbw_ops.traffic over the shop's catalog read from webdb) -> one ETL run (the real handler, as a
process, against the dwh warehouse 198.18.0.20:5432 as sbw_etl with the password from moto's SSM) ->
the schedule (a background loop running the ETL every N seconds; PID file) -> port forward
(playbooks/port_forward.yml: aws ssm start-session, SSM stand-ins) -> the dashboard in Chromium: KPIs
read and a screenshot -> a summary. Every step is `def step_x(state) -> None` over a
`sbw_ops.platform_base.PlatformState`; the step's configuration is `state.data["platform"]` (see
`PlatformConfig`), defaults = the default sandbox of inventory/sandbox/.

A second `up` on a running platform re-uses everything (the cached root, the booted hosts) and
reports the hosts' `changed` counts of site.yml: 0 once converged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sbw_ops import local_api
from sbw_ops.local_api import READY_PREFIX
from sbw_ops.platform_base import (
    APP_PASSWORD_PARAM,
    OLTP_DB,
    REGION,
    REPO_ROOT,
    STATE_DIR,
    PlatformConfig,
    PlatformState,
    _changed,
    _free_port,
    _log_dir,
    _port_free,
    aws_env,
    default_config,
    host_names,
    run_playbook,
    runs_marker,
    ssm_secret,
    stack_facts,
)
from sbw_ops.platform_etl import run_etl_once, schedule_main
from sbw_ops.platform_observe import dashboard_kpis, s3_event_ids, warehouse

# The ingest API's CORS origin in the sandbox (the shop's dev server).
DEMO_ORIGIN = "http://localhost:3000"


# --- the steps of `up` --------------------------------------------------------------------------


def step_sandbox(state: PlatformState) -> None:
    """Sandbox up: nspawn hosts webdb and dwh, moto on the gateway (playbooks/sandbox.yml)."""
    config = PlatformConfig.of(state)
    run = run_playbook(
        state, "playbooks/sandbox.yml", {"sandbox_state": "present"}, with_facts=False, hosts_over_ssm=False
    )
    state.data["s3_endpoint_url"] = config.endpoint_url
    state.data["sandbox"] = {"up": True, "changed": _changed(run).get("localhost", 0)}
    state.save()
    print(f"  hosts webdb {config.webdb_address}, dwh {config.dwh_address}; AWS: {config.endpoint_url}")


def step_site(state: PlatformState) -> None:
    """site.yml: the stacks (to moto), the dwh host's private repository, both hosts (dwh from it)."""
    run = run_playbook(state, "site.yml")
    changed = _changed(run)
    # Recap names are the instance ids (inventory/aws_ec2.yml); say webdb / dwh.
    names = host_names(state)
    hosts = {names.get(h, h): n for h, n in changed.items() if h != "localhost"}
    state.data["site"] = {"changed": hosts, "log": str(run.log)}
    state.data["raw_bucket"] = stack_facts(state)["sbw_raw_bucket"]
    state.save()
    verdict = "converged, nothing changed" if not any(hosts.values()) else "configured"
    print(f"  {verdict}: " + ", ".join(f"{h} changed={n}" for h, n in sorted(hosts.items())))


def step_local_api(state: PlatformState, timeout: float = 60.0) -> None:
    """Local ingest API started (the real handler, writing to the sandbox moto's raw bucket)."""
    config = PlatformConfig.of(state)
    state.data["s3_endpoint_url"] = config.endpoint_url
    if "raw_bucket" not in state.data:
        state.data["raw_bucket"] = stack_facts(state)["sbw_raw_bucket"]
    state.save()
    os.environ.update({k: v for k, v in aws_env().items() if k.startswith("AWS_")})
    log_path = state.directory / "local_api.log"
    cmd = local_api.command(
        state.data["raw_bucket"], state.data["s3_endpoint_url"], "--region", REGION, cors_origins=DEMO_ORIGIN
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [
                str(REPO_ROOT / "lambda_src"),
                str(REPO_ROOT / "controller"),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    state.record_process("local_api", proc.pid, "sbw_ops.local_api", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"local API exited with {proc.returncode}; see {log_path}")
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                state.data["api_url"] = line[len(READY_PREFIX) :].strip()
                state.save()
                print(f"  local ingest API: {state.data['api_url']}/clickstream  pid {proc.pid}")
                return
        time.sleep(0.05)
    raise RuntimeError(f"local API not ready after {timeout:.0f}s; see {log_path}")


def catalog(state: PlatformState) -> list[Any]:
    """The shop's catalog from the webdb host's clickstream_web (the app role, from the admin address)."""
    from sbw_ops import traffic

    config = PlatformConfig.of(state)
    password = ssm_secret(config, APP_PASSWORD_PARAM)
    dsn = (
        f"host={config.webdb_address} port=5432 dbname={OLTP_DB} user=sbw_web_app "
        f"password={password} sslmode=prefer connect_timeout=10"
    )
    return traffic.load_products(dsn, None)


def send_traffic(
    state: PlatformState, sessions: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Synthetic shoppers through the local API; returns the traffic summary (plus its event ids)."""
    from sbw_ops import traffic

    config = PlatformConfig.of(state)
    products = catalog(state)
    count = sessions or config.traffic_sessions
    backdate = timedelta(hours=config.traffic_backdate_hours)
    # Arrivals take about count/rate seconds of wall clock: stretch them over `backdate`.
    scale = max(1.0, 0.8 * backdate.total_seconds() / (count / config.traffic_rate)) if backdate else 1.0
    run_config = traffic.RunConfig(
        url=f"{state.data['api_url']}/clickstream",
        backdate=backdate,
        time_scale=scale,
        # A new seed per wave: a second `make demo` sends new shoppers, not the same sessions again.
        seed=config.traffic_seed + len(state.data.get("traffic", [])) if seed is None else seed,
        rate=config.traffic_rate,
        sessions=count,
        workers=4,
    )
    summary = traffic.run(run_config, products)
    if not summary.ok:
        raise RuntimeError(f"the ingest API refused traffic: {summary.text()}")
    result = summary.as_dict()
    result["keys"] = list(summary.keys)
    result["catalog_products"] = len(products)
    waves = state.data.setdefault("traffic", [])
    kept = (
        "seed",
        "sessions",
        "events",
        "events_by_name",
        "accepted_events",
        "bot_events",
        "requests",
        "objects_written",
    )
    waves.append({k: result[k] for k in kept})
    state.save()
    return result


def step_traffic(state: PlatformState) -> None:
    """Synthetic traffic through the local ingest API (shoppers over the webdb catalog)."""
    result = send_traffic(state)
    print(
        f"  {result['sessions']} sessions over {result['catalog_products']} products: "
        f"{result['accepted_events']} events accepted in {result['requests']} requests "
        f"(p99 {result['latency_p99_ms']:.0f} ms)"
    )


def step_etl(state: PlatformState) -> None:
    """ETL run (the real handler) into the dwh warehouse."""
    summary = run_etl_once(state)
    state.data["etl_runs"] = [*state.data.get("etl_runs", []), summary]
    state.save()
    print(
        f"  {summary['status']}: {summary.get('objects_loaded')} objects, "
        f"{summary.get('rows_inserted')} rows inserted"
    )


def step_schedule(state: PlatformState) -> None:
    """The hourly schedule simulated: the ETL every N seconds in the background (PID file)."""
    config = PlatformConfig.of(state)
    log = _log_dir(state) / "etl-schedule.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sbw_ops.platform",
                "schedule",
                "--state-dir",
                str(state.directory),
                "--every",
                str(config.schedule_every_seconds),
            ],
            cwd=REPO_ROOT,
            env={
                **aws_env(),
                "PYTHONPATH": os.pathsep.join(
                    [
                        str(REPO_ROOT / "lambda_src"),
                        str(REPO_ROOT / "controller"),
                        str(REPO_ROOT),
                    ]
                ),
            },
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state.directory / "etl-schedule.pid").write_text(f"{proc.pid}\n")
    state.record_process("etl_schedule", proc.pid, "sbw_ops.platform", log)
    print(f"  every {config.schedule_every_seconds:g} s (stands for rate(1 hour)); pid {proc.pid}")


def step_port_forward(state: PlatformState) -> None:
    """Port forward to the dashboard started (playbooks/port_forward.yml: aws ssm start-session to the
    dwh instance, through the sandbox's SSM endpoint and plugin stand-ins: its environment)."""
    config = PlatformConfig.of(state)
    port = config.dashboard_port
    previous = state.data.get("port_forward", {}).get("port")
    if previous:
        port = previous
    elif port == 0 or not _port_free(port):
        port = _free_port()
    state.data["port_forward"] = {
        "port": port,
        "run_dir": str(state.directory / "port-forward"),
    }
    state.save()
    run_playbook(state, "playbooks/port_forward.yml", _pf_vars(state, "started"))
    state.data["dashboard_url"] = f"http://127.0.0.1:{port}/sbw_dashboard/"
    state.save()
    print(f"  {state.data['dashboard_url']}")


def _pf_vars(state: PlatformState, pf_state: str) -> dict[str, Any]:
    forward = state.data["port_forward"]
    return {
        "pf_state": pf_state,
        "pf_local_port": forward["port"],
        "pf_run_dir": forward["run_dir"],
    }


def step_screenshot(state: PlatformState) -> None:
    """The dashboard in Chromium: KPIs read as it opens (bots excluded) and with its bot toggle on,
    screenshot saved."""
    shot = state.directory / "dashboard.png"
    kpis = dashboard_kpis(state.data["dashboard_url"], shot)
    with_bots = dashboard_kpis(state.data["dashboard_url"], include_bots=True)
    state.data["dashboard"] = {"kpis": kpis, "kpis_with_bots": with_bots, "screenshot": str(shot)}
    state.save()
    shown = ", ".join(f"{k} {kpis[k]:.0f}" for k in ("events", "sessions", "purchases"))
    print(f"  KPIs: {shown} (bots excluded; {with_bots['events']:.0f} events with bots)")
    print(f"  screenshot: {shot}")


def step_summary(state: PlatformState) -> None:
    """Summary: events sent (and how many of them by bots), objects, rows loaded, the dashboard's
    events as it opens (bots excluded: = human events sent) and with its bot toggle (= all sent)."""
    sent = sum(w["accepted_events"] for w in state.data.get("traffic", []))
    bots = sum(w.get("bot_events", 0) for w in state.data.get("traffic", []))
    dashboard = state.data.get("dashboard", {})
    objects, ids = s3_event_ids(state)
    dw = warehouse(state)
    summary = {
        "events_sent": sent,
        "objects": objects,
        "events_in_objects": len(ids),
        "rows_loaded": len(dw["event_ids"]),
        "bot_events_sent": bots,
        "dashboard_events": dashboard.get("kpis", {}).get("events"),
        "dashboard_events_with_bots": dashboard.get("kpis_with_bots", {}).get("events"),
        "etl_runs": dw["runs"],
    }
    state.data["summary"] = summary
    state.save()
    print(f"  events sent ........ {summary['events_sent']} ({bots} of them by bots)")
    where = f"s3://{state.data['raw_bucket']}/events/"
    print(f"  S3 objects ......... {objects} holding {len(ids)} events ({where})")
    print(f"  rows loaded ........ {summary['rows_loaded']} (clickstream_dw.clickstream_events)")
    if summary["dashboard_events"] is not None:
        print(
            f"  dashboard KPI ...... {summary['dashboard_events']:.0f} events (last 7 days, bots excluded; "
            f"{summary['dashboard_events_with_bots']:.0f} with bots)"
        )
    print(f"  ETL runs ........... {dw['runs']}")
    if "dashboard_url" in state.data:
        print(f"  dashboard .......... {state.data['dashboard_url']}")


Step = Callable[[PlatformState], None]
UP_STEPS: list[Step] = [
    step_sandbox,
    step_site,
    step_local_api,
    step_traffic,
    step_etl,
    step_schedule,
    step_port_forward,
    step_screenshot,
    step_summary,
]


# --- the steps of `down` ----------------------------------------------------------------------


def down_port_forward(state: PlatformState) -> None:
    """Stop the port forward."""
    if "port_forward" not in state.data:
        return
    run_playbook(
        state,
        "playbooks/port_forward.yml",
        _pf_vars(state, "stopped"),
        with_facts=False,
        check=False,
    )
    state.data.pop("port_forward", None)
    state.save()
    print("  port forward stopped")


def down_processes(state: PlatformState, names: tuple[str, ...] = ("etl_schedule", "local_api")) -> None:
    """Stop the ETL schedule and the local API (exactly the recorded PIDs)."""
    from sbw_ops.moto_server import stop_pid

    processes = state.processes
    for name in names:
        proc = processes.get(name)
        if not proc:
            continue
        pid = int(proc["pid"])
        if runs_marker(pid, proc["marker"]):
            stop_pid(pid, timeout=30)
            print(f"  stopped {name} (pid {pid})")
        processes.pop(name, None)
    with contextlib.suppress(FileNotFoundError):
        (state.directory / "etl-schedule.pid").unlink()
    state.save()


def down_sandbox(state: PlatformState) -> None:
    """Sandbox absent (hosts, moto, networks)."""
    if not state.data.get("sandbox", {}).get("up"):
        return
    run_playbook(
        state, "playbooks/sandbox.yml", {"sandbox_state": "absent"}, with_facts=False, hosts_over_ssm=False
    )
    state.data["sandbox"] = {"up": False}
    state.save()
    print("  sandbox removed")


DOWN_STEPS: list[Step] = [down_port_forward, down_processes, down_sandbox]


# --- up / down / schedule ------------------------------------------------------------------------


def _run_steps(state: PlatformState, steps: list[Step]) -> None:
    for number, step in enumerate(steps, 1):
        print(
            f"[{number}/{len(steps)}] {(step.__doc__ or step.__name__).splitlines()[0]}",
            flush=True,
        )
        started = time.monotonic()
        step(state)
        print(f"      ({time.monotonic() - started:.0f} s)", flush=True)


def up(directory: Path = STATE_DIR, config: PlatformConfig | None = None) -> PlatformState:
    """The whole platform; on a running one, re-converge (services restarted, hosts re-used)."""
    state = PlatformState.load(directory)
    if state.data.get("platform") and config is None:
        config = PlatformConfig.of(state)
    config = config or default_config()
    # Services are restarted; the sandbox and its hosts are kept (site.yml re-converges them).
    down_port_forward(state)
    down_processes(state, tuple(state.processes))
    state.data = {k: v for k, v in state.data.items() if k in ("sandbox", "traffic")}
    config.store(state)
    _run_steps(state, UP_STEPS)
    print(f"\nplatform is up: {state.data.get('dashboard_url')}  (stop it with: make demo-down)")
    return state


def down(directory: Path = STATE_DIR) -> None:
    state = PlatformState.load(directory)
    if state.data.get("platform"):
        _run_steps(state, DOWN_STEPS)
    down_processes(state, tuple(state.processes))  # anything else recorded (an older demo's too)
    state.path.unlink(missing_ok=True)
    print("platform is down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The whole platform on one machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sched = sub.add_parser("schedule", help="run the ETL every N seconds (foreground; `up` backgrounds it)")
    sched.add_argument("--state-dir", type=Path, default=STATE_DIR)
    sched.add_argument("--every", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "schedule":
        return schedule_main(args.state_dir, args.every)
    if args.command == "down":
        down()
        return 0
    try:
        up()
    except Exception as exc:
        print(
            f"platform failed: {exc}\nlogs and state: {STATE_DIR}; clean up with: make demo-down",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
