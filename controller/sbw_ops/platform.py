"""The whole platform on one machine: the steps of `make demo` (and of tests/test_e2e.py), as plain functions.

    python -m sbw_ops.platform up        # every step of UP_STEPS, leaves the platform running
    python -m sbw_ops.platform down      # DOWN_STEPS: port forward, scheduler, local API, sandbox absent
    python -m sbw_ops.platform schedule --state-dir DIR --every 60   # the ETL "hourly" schedule (background)

Order of `up`: sandbox (playbooks/sandbox.yml: nspawn hosts webdb/dwh, moto on the gateway) -> site.yml
(the stacks against the sandbox's moto, the dwh host's private apt repository, both hosts; dwh from
that repository) -> local ingest API
(the real handler, writing to the stacks' raw bucket in the sandbox's moto) -> synthetic traffic
(sbw_ops.traffic over the shop's catalog read from webdb) -> one ETL run (the real handler, as a
process, against the dwh warehouse 198.18.0.20:5432 as sbw_etl with the password from moto's SSM) ->
the schedule (a background loop running the ETL every N seconds; PID file) -> port forward
(playbooks/port_forward.yml, sandbox backend) -> the dashboard in Chromium: KPIs read and a screenshot
-> a summary. Every step is `def step_x(state) -> None` over a `sbw_ops.demo.DemoState` (or anything
with `directory`, `data`, `save()` and `record_process()`); the step's configuration is
`state.data["platform"]` (see `PlatformConfig`), defaults = the default sandbox of inventory/sandbox/.

A second `up` on a running platform re-uses everything (the cached root, the booted hosts) and
reports the hosts' `changed` counts of site.yml: 0 once converged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import yaml

from sbw_ops.browser import CHROMIUM, CHROMIUM_ARGS, SHINY_IDLE_JS

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("SBW_DEMO_STATE_DIR", REPO_ROOT / ".cache" / "demo"))
REGION = "ap-southeast-1"
ETL_PASSWORD_PARAM = "/sbw/dwh/etl_password"  # noqa: S105 (a parameter name)
DASHBOARD_PASSWORD_PARAM = "/sbw/dwh/dashboard_password"  # noqa: S105
APP_PASSWORD_PARAM = "/sbw/webdb/app_password"  # noqa: S105
WAREHOUSE_DB = "clickstream_dw"
OLTP_DB = "clickstream_web"
# The dashboard's KPI cards (roles/sbw_dashboard/files/app/R/ui.R: #kpi_<name>).
KPI_IDS = (
    "events",
    "sessions",
    "users",
    "logged_in_users",
    "guest_visitors",
    "first_visits",
    "product_views",
    "add_to_carts",
    "purchases",
    "revenue",
    "conversion_rate",
)
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)


class State(Protocol):
    """What the steps need of `sbw_ops.demo.DemoState`."""

    directory: Path
    data: dict[str, Any]

    def save(self) -> None: ...

    def record_process(self, name: str, pid: int, marker: str, log: Path | None = None) -> None: ...


@dataclass
class PlatformConfig:
    """Where the platform runs. Defaults: the default sandbox (inventory/sandbox/, ansible.cfg)."""

    inventory: str | None = None  # None: ansible.cfg's inventory/sandbox
    extra_vars: dict[str, Any] = field(default_factory=dict)  # -e for every playbook
    moto_port: int = 4566  # sandbox_moto_port of inventory/sandbox/group_vars/sandbox.yml
    run_dir: str = "/run/sbw-sandbox"  # sandbox_run_dir (the hosts' PID files)
    webdb_address: str = "198.18.0.10"
    dwh_address: str = "198.18.0.20"
    dashboard_port: int = 3838  # local end of the port forward; 0 = a free port
    traffic_sessions: int = 300
    traffic_rate: float = 60.0
    traffic_seed: int = 42
    # Shoppers spread over the last N hours (simulated clock sped up), so the dashboard's charts show a
    # history; 0 = all of them just now. Inside the ingest's 7-day window and the dashboard's 7 days.
    traffic_backdate_hours: float = 36.0
    schedule_every_seconds: float = 60.0  # the simulated "hourly" ETL schedule
    etl_env: dict[str, str] = field(default_factory=dict)  # extra ETL_* tuning for every run
    # SBW_STATE_ROOT of every playbook (signing key, kept base status, run files; docs/operations.md
    # "Where state lives"); None = the caller's (default ~/.sbw). A fresh directory = a fresh machine.
    state_root: str | None = None

    @classmethod
    def of(cls, state: State) -> PlatformConfig:
        return cls(**state.data.get("platform", {}))

    def store(self, state: State) -> None:
        state.data["platform"] = asdict(self)
        state.save()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"


def default_config() -> PlatformConfig:
    """`make demo`: the default sandbox (inventory/sandbox: dwh on its private repository, the shop's
    sample catalog in webdb), with the seed's bucket names."""
    return PlatformConfig(
        # No -<account>-<region> suffix: moto is private to this machine, so the walkthrough's names do.
        extra_vars={"sbw_stacks_bucket_suffix": ""}
    )


# --- helpers ----------------------------------------------------------------------------------


def aws_env() -> dict[str, str]:
    """Fake credentials for the local AWS stand-in: never hand it (or risk using) real ones."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
    )
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _log_dir(state: State) -> Path:
    path = state.directory / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def facts_file(state: State) -> Path:
    """Where playbooks/stacks.yml writes the stacks' outputs for this platform."""
    return state.directory / "stacks-facts.yml"


def stack_facts(state: State) -> dict[str, Any]:
    path = facts_file(state)
    if not path.exists():
        raise RuntimeError(f"{path} is missing: the stacks step has not run")
    return yaml.safe_load(path.read_text()) or {}


@dataclass(frozen=True)
class PlaybookRun:
    playbook: str
    returncode: int
    stdout: str
    log: Path

    def recap(self) -> dict[str, dict[str, int]]:
        """`PLAY RECAP` of the last play -> {host: {"ok": n, "changed": n, ...}}."""
        tail = self.stdout.rsplit("PLAY RECAP", 1)[-1]
        return {
            m["host"]: {k: int(v) for k, v in (pair.split("=") for pair in m["counts"].split())}
            for m in _RECAP.finditer(tail)
        }


def run_playbook(
    state: State,
    playbook: str,
    extra: dict[str, Any] | None = None,
    *,
    with_facts: bool = True,
    check: bool = True,
    options: tuple[str, ...] = (),
) -> PlaybookRun:
    """ansible-playbook with the platform's inventory and extra vars (and `options`, e.g. --check);
    output kept in logs/."""
    config = PlatformConfig.of(state)
    cmd = [_bin("ansible-playbook"), playbook, *options]
    if config.inventory:
        cmd += ["-i", config.inventory]
    settings = {"sbw_stacks_facts_file": str(facts_file(state)), **config.extra_vars, **(extra or {})}
    cmd += ["-e", json.dumps(settings)]
    if with_facts and facts_file(state).exists():
        cmd += ["-e", f"@{facts_file(state)}"]
    env = {
        **aws_env(),
        **({"SBW_STATE_ROOT": config.state_root} if config.state_root else {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / "lambda_src"), str(REPO_ROOT / "controller"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    name = Path(playbook).stem
    log = _log_dir(state) / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    print(f"      ansible-playbook {playbook} (log: {log})", flush=True)
    with log.open("w") as handle:  # streamed: `tail -f` it while a long play runs
        result = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=5400, check=False
        )
    output = log.read_text(errors="replace")
    run = PlaybookRun(playbook, result.returncode, output, log)
    if check and result.returncode != 0:
        raise RuntimeError(f"{playbook} failed (rc {result.returncode}); see {log}:\n{output[-3000:]}")
    return run


def _changed(run: PlaybookRun) -> dict[str, int]:
    return {host: counts.get("changed", 0) for host, counts in run.recap().items()}


def ssm_secret(config: PlatformConfig, name: str) -> str:
    import boto3

    ssm = boto3.client(
        "ssm",
        endpoint_url=config.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto)
    )
    return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


def s3_client(config: PlatformConfig) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 (moto)
    )


def host_pid(config: PlatformConfig, host: str) -> int:
    """PID of a sandbox host's systemd (its namespaces), from the sandbox's PID file."""
    return int((Path(config.run_dir) / f"{host}.pid").read_text().split()[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- what is where: S3 and the warehouse -----------------------------------------------------


def s3_event_ids(state: State) -> tuple[int, list[str]]:
    """(objects under events/, every event_id in them) of the raw bucket."""
    config = PlatformConfig.of(state)
    s3 = s3_client(config)
    bucket = state.data["raw_bucket"]
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    ids: list[str] = []
    lock = threading.Lock()

    def read(key: str) -> None:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        found = [json.loads(line)["event_id"] for line in body.splitlines() if line.strip()]
        with lock:
            ids.extend(found)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, keys))
    return len(keys), ids


_IN_DWH = """
import json, sys, psycopg2
conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname=sys.argv[1], user="sbw_dashboard",
                        password=sys.stdin.read(), connect_timeout=10)
with conn.cursor() as cur:
    cur.execute("SELECT event_id::text FROM clickstream_events")
    ids = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT status, count(*) FROM etl_runs GROUP BY status")
    runs = dict(cur.fetchall())
    cur.execute("SELECT status, count(*) FROM etl_objects GROUP BY status")
    objects = dict(cur.fetchall())
print(json.dumps({"event_ids": ids, "runs": runs, "objects": objects}))
"""


def warehouse(state: State) -> dict[str, Any]:
    """The warehouse as the dashboard user sees it (only from inside the dwh host: pg_hba):
    {"event_ids": [...], "runs": {status: n}, "objects": {status: n}}."""
    config = PlatformConfig.of(state)
    result = subprocess.run(
        [
            "nsenter",
            "--target",
            str(host_pid(config, "dwh")),
            "--net",
            sys.executable,
            "-c",
            _IN_DWH,
            WAREHOUSE_DB,
        ],
        input=ssm_secret(config, DASHBOARD_PASSWORD_PARAM),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot read the warehouse: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the ETL: one run, and the schedule ------------------------------------------------------


def etl_env(state: State) -> dict[str, str]:
    """Environment of SBW_Lamda_ETL run locally: the dwh warehouse, sbw_etl, password from SSM."""
    config = PlatformConfig.of(state)
    env = {k: v for k, v in aws_env().items() if not k.startswith(("DWH_", "ETL_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT / "lambda_src"), str(REPO_ROOT / "controller"), str(REPO_ROOT)]
            ),
            "DWH_HOST": config.dwh_address,
            "DWH_PORT": "5432",
            "DWH_USER": "sbw_etl",
            "DWH_DATABASE": WAREHOUSE_DB,
            "DWH_PASSWORD_PARAM": ETL_PASSWORD_PARAM,
            "RAW_BUCKET": state.data["raw_bucket"],
            "AWS_ENDPOINT_URL": config.endpoint_url,
            "POWERTOOLS_SERVICE_NAME": "sbw-etl",
            **config.etl_env,
        }
    )
    return env


def spawn_etl(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One ETL invocation as its own process (`python -m sbw_clickstream.etl_handler`)."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "sbw_clickstream.etl_handler"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=handle,
        )


def etl_summary(out: bytes, log: Path) -> dict[str, Any]:
    """The summary the handler prints last (indented JSON) after its log lines (kept in `log`)."""
    text = out.decode(errors="replace")
    with log.open("a") as handle:
        handle.write(text)
    start = 0 if text.startswith("{\n") else text.rfind("\n{\n") + 1
    if start == 0 and not text.startswith("{\n"):
        raise ValueError(f"no ETL summary in its output; see {log}")
    return json.loads(text[start:])


def run_etl_once(state: State, timeout: float = 900.0) -> dict[str, Any]:
    """One ETL run to its end; returns its summary (status, objects_loaded, rows_inserted, ...)."""
    log = _log_dir(state) / "etl.log"
    proc = spawn_etl(etl_env(state), log)
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ETL failed (exit {proc.returncode}); see {log}")
    return etl_summary(out, log)


def schedule_loop(state_dir: Path, every: float, stop: threading.Event) -> None:
    """Run the ETL every `every` seconds until `stop` (the EventBridge rate(1 hour) rule, sped up)."""
    from sbw_ops.demo import DemoState

    state = DemoState.load(state_dir)
    env = etl_env(state)
    log = _log_dir(state) / "etl.log"
    runs = state_dir / "etl-schedule.jsonl"
    while not stop.is_set():
        started = time.monotonic()
        proc = spawn_etl(env, log)
        current["proc"] = proc
        out, _ = proc.communicate()
        current["proc"] = None
        record: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "exit": proc.returncode,
        }
        with contextlib.suppress(ValueError):
            summary = etl_summary(out or b"", log)
            record.update({k: summary.get(k) for k in ("status", "objects_loaded", "rows_inserted")})
        with runs.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        stop.wait(max(0.0, every - (time.monotonic() - started)))


current: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}


def _schedule_main(state_dir: Path, every: float) -> int:
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()
        proc = current["proc"]
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the ETL is crash-safe: a cut run is redone by the next one

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    schedule_loop(state_dir, every, stop)
    return 0


def schedule_runs(state: State) -> list[dict[str, Any]]:
    path = state.directory / "etl-schedule.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the dashboard in a browser --------------------------------------------------------------


def _number(text: str) -> float:
    cleaned = re.sub(r"[^0-9.\-]", "", text)
    return float(cleaned) if cleaned else float("nan")


def dashboard_kpis(url: str, screenshot: Path | None = None, timeout_ms: int = 120_000) -> dict[str, float]:
    """Open the dashboard in headless Chromium, wait (in real time) for Shiny, read the KPI cards,
    optionally save a full-page screenshot. conversion_rate as a fraction."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=timeout_ms)
            page.wait_for_function(
                SHINY_IDLE_JS + " && document.getElementById('kpi_events').textContent.length > 0",
                timeout=timeout_ms,
            )
            values = {k: _number(page.text_content(f"#kpi_{k}") or "") for k in KPI_IDS}
            values["conversion_rate"] = values["conversion_rate"] / 100
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return values


# --- the steps of `up` --------------------------------------------------------------------------


def step_sandbox(state: State) -> None:
    """Sandbox up: nspawn hosts webdb and dwh, moto on the gateway (playbooks/sandbox.yml)."""
    config = PlatformConfig.of(state)
    run = run_playbook(state, "playbooks/sandbox.yml", {"sandbox_state": "present"}, with_facts=False)
    state.data["s3_endpoint_url"] = config.endpoint_url
    state.data["sandbox"] = {"up": True, "changed": _changed(run).get("localhost", 0)}
    state.save()
    print(f"  hosts webdb {config.webdb_address}, dwh {config.dwh_address}; AWS: {config.endpoint_url}")


def step_site(state: State) -> None:
    """site.yml: the stacks (to moto), the dwh host's private repository, both hosts (dwh from it)."""
    run = run_playbook(state, "site.yml")
    changed = _changed(run)
    hosts = {h: n for h, n in changed.items() if h != "localhost"}
    state.data["site"] = {"changed": hosts, "log": str(run.log)}
    state.data["raw_bucket"] = stack_facts(state)["sbw_raw_bucket"]
    state.save()
    verdict = "converged, nothing changed" if not any(hosts.values()) else "configured"
    print(f"  {verdict}: " + ", ".join(f"{h} changed={n}" for h, n in sorted(hosts.items())))


def step_local_api(state: State) -> None:
    """Local ingest API started (the real handler, writing to the sandbox moto's raw bucket)."""
    from sbw_ops import demo

    config = PlatformConfig.of(state)
    state.data["s3_endpoint_url"] = config.endpoint_url
    if "raw_bucket" not in state.data:
        state.data["raw_bucket"] = stack_facts(state)["sbw_raw_bucket"]
    state.save()
    os.environ.update({k: v for k, v in aws_env().items() if k.startswith("AWS_")})
    demo.step_local_api(state)  # type: ignore[arg-type]


def catalog(state: State) -> list[Any]:
    """The shop's catalog from the webdb host's clickstream_web (the app role, from the admin address)."""
    from sbw_ops import traffic

    config = PlatformConfig.of(state)
    password = ssm_secret(config, APP_PASSWORD_PARAM)
    dsn = (
        f"host={config.webdb_address} port=5432 dbname={OLTP_DB} user=sbw_web_app "
        f"password={password} sslmode=prefer connect_timeout=10"
    )
    return traffic.load_products(dsn, None)


def send_traffic(state: State, sessions: int | None = None, seed: int | None = None) -> dict[str, Any]:
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
    kept = ("seed", "sessions", "events", "events_by_name", "accepted_events", "requests", "objects_written")
    waves.append({k: result[k] for k in kept})
    state.save()
    return result


def step_traffic(state: State) -> None:
    """Synthetic traffic through the local ingest API (shoppers over the webdb catalog)."""
    result = send_traffic(state)
    print(
        f"  {result['sessions']} sessions over {result['catalog_products']} products: "
        f"{result['accepted_events']} events accepted in {result['requests']} requests "
        f"(p99 {result['latency_p99_ms']:.0f} ms)"
    )


def step_etl(state: State) -> None:
    """ETL run (the real handler) into the dwh warehouse."""
    summary = run_etl_once(state)
    state.data["etl_runs"] = [*state.data.get("etl_runs", []), summary]
    state.save()
    print(
        f"  {summary['status']}: {summary.get('objects_loaded')} objects, "
        f"{summary.get('rows_inserted')} rows inserted"
    )


def step_schedule(state: State) -> None:
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
                    [str(REPO_ROOT / "lambda_src"), str(REPO_ROOT / "controller"), str(REPO_ROOT)]
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


def step_port_forward(state: State) -> None:
    """Port forward to the dashboard started (playbooks/port_forward.yml, sandbox backend)."""
    config = PlatformConfig.of(state)
    port = config.dashboard_port
    previous = state.data.get("port_forward", {}).get("port")
    if previous:
        port = previous
    elif port == 0 or not _port_free(port):
        port = _free_port()
    state.data["port_forward"] = {"port": port, "run_dir": str(state.directory / "port-forward")}
    state.save()
    run_playbook(state, "playbooks/port_forward.yml", _pf_vars(state, "started"), with_facts=False)
    state.data["dashboard_url"] = f"http://127.0.0.1:{port}/sbw_dashboard/"
    state.save()
    print(f"  {state.data['dashboard_url']}")


def _pf_vars(state: State, pf_state: str) -> dict[str, Any]:
    forward = state.data["port_forward"]
    return {"pf_state": pf_state, "pf_local_port": forward["port"], "pf_run_dir": forward["run_dir"]}


def step_screenshot(state: State) -> None:
    """The dashboard in Chromium: KPIs read, screenshot saved."""
    shot = state.directory / "dashboard.png"
    kpis = dashboard_kpis(state.data["dashboard_url"], shot)
    state.data["dashboard"] = {"kpis": kpis, "screenshot": str(shot)}
    state.save()
    shown = ", ".join(f"{k} {kpis[k]:.0f}" for k in ("events", "sessions", "purchases"))
    print(f"  KPIs: {shown}")
    print(f"  screenshot: {shot}")


def step_summary(state: State) -> None:
    """Summary: events sent, objects, rows loaded."""
    sent = sum(w["accepted_events"] for w in state.data.get("traffic", []))
    objects, ids = s3_event_ids(state)
    dw = warehouse(state)
    summary = {
        "events_sent": sent,
        "objects": objects,
        "events_in_objects": len(ids),
        "rows_loaded": len(dw["event_ids"]),
        "dashboard_events": state.data.get("dashboard", {}).get("kpis", {}).get("events"),
        "etl_runs": dw["runs"],
    }
    state.data["summary"] = summary
    state.save()
    print(f"  events sent ........ {summary['events_sent']}")
    where = f"s3://{state.data['raw_bucket']}/events/"
    print(f"  S3 objects ......... {objects} holding {len(ids)} events ({where})")
    print(f"  rows loaded ........ {summary['rows_loaded']} (clickstream_dw.clickstream_events)")
    if summary["dashboard_events"] is not None:
        print(f"  dashboard KPI ...... {summary['dashboard_events']:.0f} events (last 7 days)")
    print(f"  ETL runs ........... {dw['runs']}")
    if "dashboard_url" in state.data:
        print(f"  dashboard .......... {state.data['dashboard_url']}")


Step = Callable[[State], None]
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


def down_port_forward(state: State) -> None:
    """Stop the port forward."""
    if "port_forward" not in state.data:
        return
    run_playbook(
        state, "playbooks/port_forward.yml", _pf_vars(state, "stopped"), with_facts=False, check=False
    )
    state.data.pop("port_forward", None)
    state.save()
    print("  port forward stopped")


def down_processes(state: State, names: tuple[str, ...] = ("etl_schedule", "local_api")) -> None:
    """Stop the ETL schedule and the local API (exactly the recorded PIDs)."""
    from sbw_ops.moto_server import stop_pid

    processes: dict[str, dict[str, Any]] = getattr(state, "processes", {})
    for name in names:
        proc = processes.get(name)
        if not proc:
            continue
        pid = int(proc["pid"])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        if proc["marker"] in cmdline:
            stop_pid(pid, timeout=30)
            print(f"  stopped {name} (pid {pid})")
        processes.pop(name, None)
    with contextlib.suppress(FileNotFoundError):
        (state.directory / "etl-schedule.pid").unlink()
    state.save()


def down_sandbox(state: State) -> None:
    """Sandbox absent (hosts, moto, networks)."""
    if not state.data.get("sandbox", {}).get("up"):
        return
    run_playbook(state, "playbooks/sandbox.yml", {"sandbox_state": "absent"}, with_facts=False)
    state.data["sandbox"] = {"up": False}
    state.save()
    print("  sandbox removed")


DOWN_STEPS: list[Step] = [down_port_forward, down_processes, down_sandbox]


# --- up / down / schedule ------------------------------------------------------------------------


def _run_steps(state: State, steps: list[Step]) -> None:
    for number, step in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {(step.__doc__ or step.__name__).splitlines()[0]}", flush=True)
        started = time.monotonic()
        step(state)
        print(f"      ({time.monotonic() - started:.0f} s)", flush=True)


def up(directory: Path = STATE_DIR, config: PlatformConfig | None = None) -> Any:
    """The whole platform; on a running one, re-converge (services restarted, hosts re-used)."""
    from sbw_ops.demo import DemoState

    state = DemoState.load(directory)
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
    from sbw_ops.demo import DemoState

    state = DemoState.load(directory)
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
        return _schedule_main(args.state_dir, args.every)
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
