"""What every part of the local platform shares: where it runs (`PlatformConfig`), what it started and
learned (`PlatformState`), fake credentials for the AWS stand-in, and `run_playbook` (ansible-playbook
with the platform's inventory, extra vars and stacks' facts). The steps are in `sbw_ops.platform`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("SBW_DEMO_STATE_DIR", REPO_ROOT / ".cache" / "demo"))
REGION = "ap-southeast-1"
ETL_PASSWORD_PARAM = "/sbw/dwh/etl_password"  # noqa: S105 (a parameter name)
DASHBOARD_PASSWORD_PARAM = "/sbw/dwh/dashboard_password"  # noqa: S105
APP_PASSWORD_PARAM = "/sbw/webdb/app_password"  # noqa: S105
WAREHOUSE_DB = "clickstream_dw"
OLTP_DB = "clickstream_web"
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$", re.MULTILINE)


@dataclass
class PlatformState:
    """What `up` started and learned (state.json in its directory); saved after every step so `down`
    works after a failure. `processes` are the PIDs `down` stops, each with a marker its command line
    must still contain (a recycled PID is left alone)."""

    directory: Path
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / "state.json"

    def record_process(self, name: str, pid: int, marker: str, log: Path | None = None) -> None:
        """Remember a process `down` must stop; `marker` must appear in its command line."""
        self.processes[name] = {
            "pid": pid,
            "marker": marker,
            "log": str(log) if log else None,
        }
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"processes": self.processes, "data": self.data}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> PlatformState:
        state = cls(directory)
        if state.path.exists():
            saved = json.loads(state.path.read_text())
            state.processes = saved.get("processes", {})
            state.data = saved.get("data", {})
        return state


def runs_marker(pid: int, marker: str) -> bool:
    """Whether `pid` is alive and its command line still contains `marker`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


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
    def of(cls, state: PlatformState) -> PlatformConfig:
        return cls(**state.data.get("platform", {}))

    def store(self, state: PlatformState) -> None:
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


# The real AWS inventory: the host plays reach the sandbox's hosts as the hosts stack's EC2 instances
# (in moto) over amazon.aws.aws_ssm, as ssm-user (docs/operations.md "The sandbox").
AWS_INVENTORY = "inventory/aws_ec2.yml"
SANDBOX_INVENTORY = "inventory/sandbox"


def sandbox_env(run_dir: str | Path) -> dict[str, str]:
    """What a run against the sandbox exports (roles/sandbox writes <run_dir>/aws-env.json): the
    AWS_ENDPOINT_URL* variables, moto's fake credentials and PATH with the sandbox's bin dir (its
    session-manager-plugin) first. Empty before the sandbox is up."""
    path = Path(run_dir) / "aws-env.json"
    if not path.exists():
        return {}
    env = dict(json.loads(path.read_text()))
    bin_dir = env.pop("SBW_SANDBOX_BIN_DIR", "")
    if bin_dir:
        env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _log_dir(state: PlatformState) -> Path:
    path = state.directory / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def facts_file(state: PlatformState) -> Path:
    """Where playbooks/stacks.yml writes the stacks' outputs for this platform."""
    return state.directory / "stacks-facts.yml"


def stack_facts(state: PlatformState) -> dict[str, Any]:
    path = facts_file(state)
    if not path.exists():
        raise RuntimeError(f"{path} is missing: the stacks step has not run")
    return yaml.safe_load(path.read_text()) or {}


def host_names(state: PlatformState) -> dict[str, str]:
    """The hosts' inventory names (their EC2 instance ids, inventory/aws_ec2.yml) -> webdb / dwh."""
    facts = stack_facts(state)
    return {facts["sbw_webdb_instance_id"]: "webdb", facts["sbw_dwh_instance_id"]: "dwh"}


@dataclass(frozen=True)
class PlaybookRun:
    playbook: str
    returncode: int
    stdout: str
    log: Path

    def recap(self) -> dict[str, dict[str, int]]:
        """`PLAY RECAP` of the last play -> {host: {"ok": n, "changed": n, ...}}."""
        return play_recap(self.stdout)


def play_recap(stdout: str) -> dict[str, dict[str, int]]:
    """The last `PLAY RECAP` of ansible-playbook's output -> {host: {"ok": n, "changed": n, ...}}."""
    tail = stdout.rsplit("PLAY RECAP", 1)[-1]
    return {
        m["host"]: {k: int(v) for k, v in (pair.split("=") for pair in m["counts"].split())}
        for m in _RECAP.finditer(tail)
    }


def run_playbook(
    state: PlatformState,
    playbook: str,
    extra: dict[str, Any] | None = None,
    *,
    with_facts: bool = True,
    check: bool = True,
    options: tuple[str, ...] = (),
    hosts_over_ssm: bool = True,
) -> PlaybookRun:
    """ansible-playbook with the platform's inventory and extra vars (and `options`, e.g. --check);
    output kept in logs/. `hosts_over_ssm`: the hosts through inventory/aws_ec2.yml and the
    sandbox's environment (aws-env.json), as on AWS; False for playbooks/sandbox.yml itself."""
    config = PlatformConfig.of(state)
    cmd = [_bin("ansible-playbook"), playbook, *options]
    cmd += ["-i", config.inventory or SANDBOX_INVENTORY]
    if hosts_over_ssm:
        cmd += ["-i", AWS_INVENTORY]
    settings = {
        "sbw_stacks_facts_file": str(facts_file(state)),
        **config.extra_vars,
        **(extra or {}),
    }
    cmd += ["-e", json.dumps(settings)]
    if with_facts and facts_file(state).exists():
        cmd += ["-e", f"@{facts_file(state)}"]
    aws = sandbox_env(config.run_dir) if hosts_over_ssm else {}
    env = {
        **aws_env(),
        **aws,
        **({"SBW_STATE_ROOT": config.state_root} if config.state_root else {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{aws.get('PATH', os.environ.get('PATH', ''))}",
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONPATH": os.pathsep.join(
            [
                str(REPO_ROOT / "lambda_src"),
                str(REPO_ROOT / "controller"),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
    }
    name = Path(playbook).stem
    log = _log_dir(state) / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    print(f"      ansible-playbook {playbook} (log: {log})", flush=True)
    with log.open("w") as handle:  # streamed: `tail -f` it while a long play runs
        result = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=5400,
            check=False,
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
