"""`make demo` / `make demo-down`: bring up what exists of the platform locally and show it working.

    python -m sbw_ops.demo up     # run every step of UP_STEPS in order, leave the services running
    python -m sbw_ops.demo down   # stop exactly the processes `up` recorded, forget the state

State (PIDs, URLs, names) lives in `.cache/demo/state.json`; logs beside it. `down` stops only
the PIDs recorded there, after checking each still runs the command it was started with.

Extending: write a step `def step_x(state: DemoState) -> None`, append it to `UP_STEPS` (order
matters), record any process with `state.record_process(...)` so `down` stops it, and keep
whatever later steps need in `state.data`. Steps so far: local S3 (moto server) -> raw bucket ->
local ingest API -> a burst of sample events -> list what was written.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sbw_ops.local_api import READY_PREFIX
from sbw_ops.moto_server import start_moto_server, stop_pid

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("SBW_DEMO_STATE_DIR", REPO_ROOT / ".cache" / "demo"))
RAW_BUCKET = "clickstream-s3-ingest"
REGION = "ap-southeast-1"
DEMO_ORIGIN = "http://localhost:3000"


@dataclass
class DemoState:
    """What `up` started and learned; saved after every step so `down` works after a failure."""

    directory: Path
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / "state.json"

    def record_process(self, name: str, pid: int, marker: str, log: Path | None = None) -> None:
        """Remember a process `down` must stop; `marker` must appear in its command line."""
        self.processes[name] = {"pid": pid, "marker": marker, "log": str(log) if log else None}
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"processes": self.processes, "data": self.data}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> DemoState:
        state = cls(directory)
        if state.path.exists():
            saved = json.loads(state.path.read_text())
            state.processes = saved.get("processes", {})
            state.data = saved.get("data", {})
        return state


def _aws_env() -> None:
    """The local S3 takes any credentials: never hand it (or risk using) real ones."""
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def s3_client(state: DemoState) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=state.data["s3_endpoint_url"], region_name=REGION)


# --- steps -------------------------------------------------------------------------------------


def step_local_s3(state: DemoState) -> None:
    """Start a moto server (local S3) on 127.0.0.1, free port."""
    server = start_moto_server(state.directory / "moto_server.log", detach=True)
    state.data["s3_endpoint_url"] = server.endpoint_url
    state.record_process("moto_server", server.pid, "moto_server", server.log_path)
    print(f"  local S3 (moto server): {server.endpoint_url}  pid {server.pid}")


def step_raw_bucket(state: DemoState) -> None:
    """Create the raw bucket."""
    s3_client(state).create_bucket(
        Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    state.data["raw_bucket"] = RAW_BUCKET
    state.save()
    print(f"  raw bucket: s3://{RAW_BUCKET}")


def step_local_api(state: DemoState, timeout: float = 60.0) -> None:
    """Start the local ingest API (the real Lambda handler behind an HTTP adapter)."""
    log_path = state.directory / "local_api.log"
    cmd = [
        sys.executable,
        "-m",
        "sbw_ops.local_api",
        "--port",
        "0",
        "--bucket",
        state.data["raw_bucket"],
        "--s3-endpoint-url",
        state.data["s3_endpoint_url"],
        "--region",
        REGION,
        "--cors-origins",
        DEMO_ORIGIN,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / "lambda_src"), str(REPO_ROOT / "controller"), os.environ.get("PYTHONPATH", "")]
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


def sample_events(count: int, start: datetime) -> list[dict[str, Any]]:
    """Plausible shop events: a guest and a logged-in shopper browsing, carting, buying."""
    products = [
        ("P-1001", "Trail Running Shoe", "Footwear", "Northpeak", 89.9, 74.9),
        ("P-2002", "Merino Hoodie", "Apparel", "Woolly", 120.0, None),
        ("P-3003", "Water Bottle 750ml", "Accessories", "Hydra", 15.5, 12.0),
    ]
    names = ["page_view", "product_view", "add_to_cart", "begin_checkout", "purchase", "search"]
    events = []
    for i in range(count):
        pid, pname, cat, brand, price, discount = products[i % len(products)]
        logged_in = i % 2 == 0
        event: dict[str, Any] = {
            "event_timestamp": (start + timedelta(seconds=i)).isoformat(timespec="milliseconds"),
            "event_name": names[i % len(names)],
            "client_id": f"demo-client-{i % 4}",
            "session_id": f"demo-session-{i % 4}",
            "is_first_visit": i < 4,
            "context_product_id": pid,
            "context_product_name": pname,
            "context_product_category": cat,
            "context_product_brand": brand,
            "context_product_price": price,
            "context_product_discount_price": discount,
            "context_product_url_path": f"/products/{pid.lower()}",
        }
        if logged_in:
            event["user_id"] = f"demo-user-{i % 4}"
        events.append(event)
    return events


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST and return (status, JSON body), for 2xx and 4xx/5xx alike."""
    if not url.startswith("http://127."):
        raise ValueError(f"the demo only talks to 127.0.0.0/8, not {url}")
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (checked above)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def step_send_events(state: DemoState) -> None:
    """A burst of sample events: singles, a batch, a gzip batch, and one bad request."""
    url = f"{state.data['api_url']}/clickstream"
    base = {"Content-Type": "application/json", "Origin": DEMO_ORIGIN, "User-Agent": "sbw-demo/1 (make demo)"}
    now = datetime.now(UTC) - timedelta(minutes=2)
    events = sample_events(60, now)
    results: list[tuple[str, int, dict[str, Any]]] = []
    for event in events[:10]:
        results.append(("single", *post(url, json.dumps(event).encode(), base)))
    results.append(("batch of 20", *post(url, json.dumps({"events": events[10:30]}).encode(), base)))
    gz = gzip.compress(json.dumps({"events": events[30:60]}).encode())
    results.append(("gzip batch of 30", *post(url, gz, {**base, "Content-Encoding": "gzip"})))
    bad = {"events": [events[0], {**events[1], "event_name": "Add To Cart", "context_product_price": -1}]}
    results.append(("invalid batch", *post(url, json.dumps(bad).encode(), base)))
    accepted = sum(body.get("accepted", 0) for _, status, body in results if status == 200)
    for label, status, body in results[-3:]:
        detail = body.get("key") or f"{body.get('error')}: {body.get('message')}"
        print(f"  {label:<17} -> {status} {detail}")
    print(f"  {len(results)} requests, {accepted} events accepted")
    state.data["sent"] = {"requests": len(results), "accepted_events": accepted}
    state.save()


def step_list_objects(state: DemoState) -> None:
    """List what the API wrote to the raw bucket and show one stored event."""
    s3 = s3_client(state)
    bucket = state.data["raw_bucket"]
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.extend(page.get("Contents", []))
    events = [o for o in objects if o["Key"].startswith("events/")]
    failed = [o for o in objects if o["Key"].startswith("failed/")]
    lines = 0
    sample: dict[str, Any] | None = None
    for obj in events:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        rows = [json.loads(line) for line in body.splitlines() if line.strip()]
        lines += len(rows)
        sample = sample or rows[0]
    print(
        f"  s3://{bucket}: {len(events)} objects under events/ holding {lines} events, "
        f"{len(failed)} under failed/"
    )
    for obj in (events[:3] + events[-2:]) if len(events) > 5 else events:
        print(f"    {obj['Key']}  {obj['Size']} bytes")
    for obj in failed:
        print(f"    {obj['Key']}  {obj['Size']} bytes")
    if sample:
        print("  one stored event:")
        print("    " + json.dumps(sample, ensure_ascii=False))
    state.data["written"] = {"event_objects": len(events), "events": lines, "failed_records": len(failed)}
    state.save()


Step = Callable[[DemoState], None]
UP_STEPS: list[Step] = [step_local_s3, step_raw_bucket, step_local_api, step_send_events, step_list_objects]


# --- up / down ---------------------------------------------------------------------------------


def _runs(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def down(directory: Path = STATE_DIR) -> None:
    """Stop what `up` recorded (reverse order), then forget the state."""
    state = DemoState.load(directory)
    for name, proc in reversed(list(state.processes.items())):
        pid = int(proc["pid"])
        if _runs(pid, proc["marker"]):
            stop_pid(pid)
            print(f"stopped {name} (pid {pid})")
        else:
            print(f"{name} (pid {pid}) was not running")
    if state.path.exists():
        state.path.unlink()
    print("demo is down")


def up(directory: Path = STATE_DIR) -> DemoState:
    """Run every step; on failure the state so far is kept so `down` cleans up."""
    if DemoState.load(directory).processes:
        print("demo state found: stopping the previous demo first")
        down(directory)
    _aws_env()
    state = DemoState(directory)
    state.save()
    for number, step in enumerate(UP_STEPS, 1):
        print(f"[{number}/{len(UP_STEPS)}] {(step.__doc__ or step.__name__).splitlines()[0]}", flush=True)
        step(state)
    print()
    print(
        f"demo is up. Try:  curl -s -X POST {state.data['api_url']}/clickstream "
        "-H 'content-type: application/json' \\"
    )
    print(
        """  -d '{"event_timestamp":"'$(date -u +%FT%TZ)'","event_name":"page_view","""
        """"client_id":"c1","session_id":"s1"}'"""
    )
    print("stop it with:  make demo-down")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local demo of the platform.")
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            up()
        except Exception as exc:
            print(
                f"demo failed: {exc}\nlogs and state: {STATE_DIR}; clean up with: make demo-down",
                file=sys.stderr,
            )
            return 1
    else:
        down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
