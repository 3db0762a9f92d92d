"""`python -m sbw_ops.demo up|down` (what `make demo` / `make demo-down` run), in a private state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
from sbw_ops import demo

LAMBDA_SRC = Path(__file__).resolve().parents[1] / "lambda_src"


def _run(command: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(LAMBDA_SRC), str(LAMBDA_SRC.parent / "controller")]),
        "SBW_DEMO_STATE_DIR": str(state_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "sbw_ops.demo", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_demo_up_writes_events_and_down_stops_exactly_its_processes(tmp_path: Path) -> None:
    up = _run("up", tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "state.json").read_text())
        assert set(state["processes"]) == {"moto_server", "local_api"}
        pids = [p["pid"] for p in state["processes"].values()]
        assert all(_alive(pid) for pid in pids)
        data = state["data"]
        assert data["sent"]["accepted_events"] == 60
        assert data["written"] == {"event_objects": 12, "events": 60, "failed_records": 1}
        assert "objects under events/ holding 60 events" in up.stdout

        s3 = boto3.client("s3", endpoint_url=data["s3_endpoint_url"], region_name=demo.REGION)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=demo.RAW_BUCKET)["Contents"]]
        assert sum(k.startswith("events/") for k in keys) == 12
    finally:
        down = _run("down", tmp_path)
    assert down.returncode == 0, down.stderr
    assert "stopped local_api" in down.stdout and "stopped moto_server" in down.stdout
    assert not any(_alive(pid) for pid in pids)
    assert not (tmp_path / "state.json").exists()
    again = _run("down", tmp_path)  # idempotent
    assert again.returncode == 0 and "demo is down" in again.stdout
