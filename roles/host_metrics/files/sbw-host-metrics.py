#!/usr/bin/python3
"""Publish the disk use of the data directories' filesystems to CloudWatch (roles/host_metrics).

Run by sbw-host-metrics.timer. For each configured path: `disk_used_percent` = used / (used + available)
x 100, as df prints it (the root-reserved blocks count as neither), with dimensions InstanceId and path:
the names the hosts stack's disk alarms watch. One PutMetricData call (the CloudWatch Query API, signed
with SigV4) through the monitoring interface endpoint; standard library only, because the private host
installs nothing from outside its own repository and needs no agent for two numbers.

Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) from the environment (the
sandbox's moto), else the instance role's through IMDSv2; the instance id likewise from the config, else
IMDSv2. Exit 1 with the reason on stderr when the call fails (systemd records the failed run).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import sys
import urllib.parse
import urllib.request

IMDS = "http://169.254.169.254"


def disk_used_percent(path: str) -> float:
    stats = os.statvfs(path)
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    available = stats.f_bavail * stats.f_frsize
    return round(100.0 * used / (used + available), 2) if used + available else 0.0


def _imds(path: str, token: str | None = None) -> str:
    if token is None:
        request = urllib.request.Request(  # noqa: S310 (IMDS, http)
            f"{IMDS}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
        )
        with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310 (IMDS, http)
            token = answer.read().decode()
    request = urllib.request.Request(f"{IMDS}{path}", headers={"X-aws-ec2-metadata-token": token})  # noqa: S310
    with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310 (IMDS, http)
        return answer.read().decode()


def credentials() -> tuple[str, str, str | None]:
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return (
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_SESSION_TOKEN"),
        )
    role = _imds("/latest/meta-data/iam/security-credentials/").splitlines()[0]
    found = json.loads(_imds(f"/latest/meta-data/iam/security-credentials/{role}"))
    return found["AccessKeyId"], found["SecretAccessKey"], found.get("Token")


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def put_metric_data(endpoint: str, region: str, body: str, now: datetime.datetime) -> None:
    """POST one Query API call to `endpoint`, SigV4-signed for service `monitoring`."""
    access_key, secret_key, token = credentials()
    url = urllib.parse.urlsplit(endpoint)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": url.netloc,
        "x-amz-date": amz_date,
    }
    if token:
        headers["x-amz-security-token"] = token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            "POST",
            url.path or "/",
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            hashlib.sha256(body.encode()).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/monitoring/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(_sign(_sign(_sign(f"AWS4{secret_key}".encode(), day), region), "monitoring"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    request = urllib.request.Request(endpoint, data=body.encode(), method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=20) as answer:  # noqa: S310 (checked in main)
        answer.read()


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/etc/sbw-host-metrics/config.json"
    with open(path) as file:
        config = json.load(file)
    missing = [k for k in ("namespace", "region", "paths") if not config.get(k)]
    if missing:
        print(f"{path}: missing {', '.join(missing)} (written by roles/host_metrics)", file=sys.stderr)
        return 2
    region = config["region"]
    endpoint = config.get("endpoint_url") or f"https://monitoring.{region}.amazonaws.com/"
    if not endpoint.startswith(("http://", "https://")):
        print(f"{path}: endpoint_url {endpoint!r} is not an http(s) URL", file=sys.stderr)
        return 2
    instance_id = config.get("instance_id") or _imds("/latest/meta-data/instance-id")
    now = datetime.datetime.now(datetime.UTC)
    fields = {"Action": "PutMetricData", "Version": "2010-08-01", "Namespace": config["namespace"]}
    for index, path in enumerate(config["paths"], start=1):
        member = f"MetricData.member.{index}"
        try:
            value = disk_used_percent(path)
        except OSError as error:
            print(f"cannot measure {path}: {error}", file=sys.stderr)
            return 1
        fields.update(
            {
                f"{member}.MetricName": "disk_used_percent",
                f"{member}.Unit": "Percent",
                f"{member}.Value": str(value),
                f"{member}.Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                f"{member}.Dimensions.member.1.Name": "InstanceId",
                f"{member}.Dimensions.member.1.Value": instance_id,
                f"{member}.Dimensions.member.2.Name": "path",
                f"{member}.Dimensions.member.2.Value": path,
            }
        )
        print(f"disk_used_percent path={path} InstanceId={instance_id} {value}")
    try:
        put_metric_data(endpoint, region, urllib.parse.urlencode(fields), now)
    except OSError as error:  # URLError/HTTPError: say where and why
        detail = error.read().decode(errors="replace")[:500] if hasattr(error, "read") else ""
        print(f"PutMetricData to {endpoint} failed: {error} {detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
