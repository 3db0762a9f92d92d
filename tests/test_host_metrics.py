"""roles/host_metrics' publisher script (files/sbw-host-metrics.py) against a real moto server, run by
the system python3 the hosts have (standard library only): the metric the disk alarms watch arrives with
df's figure and both dimensions; a failed call or an unmeasurable path exits 1 saying why. The same
script under its systemd timer on a sandbox host: molecule/host_metrics."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "roles" / "host_metrics" / "files" / "sbw-host-metrics.py"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "PATH": "/usr/bin:/bin"}


def publish(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        ["/usr/bin/python3", str(SCRIPT), str(path)],
        env=CREDENTIALS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def df_percent(path: Path) -> float:
    """What `df` prints for the filesystem: used / (used + available), rounded up to a percent."""
    out = subprocess.run(["df", "--output=pcent", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.splitlines()[-1].strip().rstrip("%"))


def test_publishes_disk_used_percent_with_the_alarms_dimensions(
    tmp_path: Path, moto_endpoint_url: str, aws_client: Any
) -> None:
    instance = f"i-{uuid.uuid4().hex[:17]}"
    before = df_percent(tmp_path)
    run = publish(
        tmp_path,
        {
            "namespace": "SBW/Hosts",
            "region": os.environ.get("AWS_DEFAULT_REGION", "ap-southeast-1"),
            "endpoint_url": moto_endpoint_url + "/",
            "instance_id": instance,
            "paths": [str(tmp_path)],
        },
    )
    assert run.returncode == 0, run.stderr
    cloudwatch = aws_client("cloudwatch")
    now = datetime.datetime.now(datetime.UTC)
    dimensions = [{"Name": "InstanceId", "Value": instance}, {"Name": "path", "Value": str(tmp_path)}]
    points = cloudwatch.get_metric_statistics(
        Namespace="SBW/Hosts",
        MetricName="disk_used_percent",
        Dimensions=dimensions,
        StartTime=now - datetime.timedelta(minutes=5),
        EndTime=now + datetime.timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    (point,) = points
    assert point["Unit"] == "Percent"
    # df rounds up to a whole percent; the filesystem is shared with other work, so take df before and after.
    after = df_percent(tmp_path)
    assert min(before, after) - 1 < point["Maximum"] <= max(before, after)
    listed = cloudwatch.list_metrics(Namespace="SBW/Hosts", Dimensions=[dimensions[0]])["Metrics"]
    assert [m["MetricName"] for m in listed] == ["disk_used_percent"]


def test_a_failed_call_or_a_missing_path_exits_1_saying_why(tmp_path: Path, moto_endpoint_url: str) -> None:
    base = {"namespace": "SBW/Hosts", "region": "ap-southeast-1", "instance_id": "i-0123456789abcdef0"}
    # Nothing listens on port 9 of loopback.
    refused = publish(tmp_path, {**base, "endpoint_url": "http://127.0.0.1:9/", "paths": [str(tmp_path)]})
    assert refused.returncode == 1
    assert "PutMetricData to http://127.0.0.1:9/ failed" in refused.stderr
    missing = tmp_path / "not-there"
    gone = publish(tmp_path, {**base, "endpoint_url": moto_endpoint_url + "/", "paths": [str(missing)]})
    assert gone.returncode == 1
    assert f"cannot measure {missing}" in gone.stderr


@pytest.mark.parametrize("field", ["namespace", "region", "paths"])
def test_a_config_without_a_required_field_fails(tmp_path: Path, field: str) -> None:
    config = {"namespace": "SBW/Hosts", "region": "ap-southeast-1", "instance_id": "i-1", "paths": ["/"]}
    del config[field]
    run = publish(tmp_path, config)
    assert run.returncode == 2 and f"missing {field} (written by roles/host_metrics)" in run.stderr
