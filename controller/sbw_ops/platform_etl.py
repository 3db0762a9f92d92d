"""SBW_Lamda_ETL run locally against the sandbox's warehouse: its environment (the dwh host, sbw_etl,
the password from moto's SSM), one run as a process, and the simulated hourly schedule (a loop that
`python -m sbw_ops.platform schedule` runs in the background)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sbw_ops.platform_base import (
    ETL_PASSWORD_PARAM,
    REPO_ROOT,
    WAREHOUSE_DB,
    PlatformConfig,
    PlatformState,
    _log_dir,
    aws_env,
)


def etl_env(state: PlatformState) -> dict[str, str]:
    """Environment of SBW_Lamda_ETL run locally: the dwh warehouse, sbw_etl, password from SSM."""
    config = PlatformConfig.of(state)
    env = {k: v for k, v in aws_env().items() if not k.startswith(("DWH_", "ETL_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                [
                    str(REPO_ROOT / "lambda_src"),
                    str(REPO_ROOT / "controller"),
                    str(REPO_ROOT),
                ]
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


def run_etl_once(state: PlatformState, timeout: float = 900.0) -> dict[str, Any]:
    """One ETL run to its end; returns its summary (status, objects_loaded, rows_inserted, ...)."""
    log = _log_dir(state) / "etl.log"
    proc = spawn_etl(etl_env(state), log)
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ETL failed (exit {proc.returncode}); see {log}")
    return etl_summary(out, log)


def schedule_loop(state_dir: Path, every: float, stop: threading.Event) -> None:
    """Run the ETL every `every` seconds until `stop` (the EventBridge rate(1 hour) rule, sped up)."""
    state = PlatformState.load(state_dir)
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


def schedule_main(state_dir: Path, every: float) -> int:
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


def schedule_runs(state: PlatformState) -> list[dict[str, Any]]:
    path = state.directory / "etl-schedule.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
