"""The SSM endpoint stand-in and the `session-manager-plugin` stand-in (sbw_ops.ssm_session).

The endpoint runs in-process on a free port in front of a real moto server: session calls are
answered by it (an unknown target is refused as the service refuses it), every other SSM call
reaches moto unchanged. The plugin is run as the AWS CLI runs it, for a port-forward session whose
"host" is this test process's own network namespace (nsenter into our own PID: root, no nspawn host).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from sbw_ops.ssm_session import SessionStore, make_handler

from tests.service_support import free_port


@pytest.fixture
def ssm_endpoint(moto_endpoint_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    hosts_file = tmp_path / "instances.json"
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(SessionStore(hosts_file), moto_endpoint_url))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hosts_file
    server.shutdown()
    server.server_close()


def _ssm(endpoint: str):
    return boto3.client(
        "ssm", endpoint_url=endpoint, region_name="ap-southeast-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def test_other_calls_reach_moto(ssm_endpoint: tuple[str, Path], moto_endpoint_url: str) -> None:
    endpoint, _ = ssm_endpoint
    _ssm(endpoint).put_parameter(
        Name="/sbw/test/ssm-session", Value="v1", Type="SecureString", Overwrite=True
    )
    direct = _ssm(moto_endpoint_url).get_parameter(Name="/sbw/test/ssm-session", WithDecryption=True)
    assert direct["Parameter"]["Value"] == "v1"
    with pytest.raises(ClientError) as missing:
        _ssm(endpoint).get_parameter(Name="/sbw/test/absent")
    assert missing.value.response["Error"]["Code"] == "ParameterNotFound"


def test_sessions(ssm_endpoint: tuple[str, Path], tmp_path: Path) -> None:
    endpoint, hosts_file = ssm_endpoint
    ssm = _ssm(endpoint)
    with pytest.raises(ClientError) as unknown:
        ssm.start_session(Target="i-0123456789abcdef0")
    assert unknown.value.response["Error"]["Code"] == "TargetNotConnected"
    hosts_file.write_text(json.dumps({"i-0123456789abcdef0": str(tmp_path / "webdb.pid")}))
    started = ssm.start_session(Target="i-0123456789abcdef0")
    assert started["StreamUrl"].startswith("sbw-sandbox://i-0123456789abcdef0/" + started["SessionId"])
    assert "webdb.pid" in started["StreamUrl"]
    with pytest.raises(ClientError) as bad_doc:
        ssm.start_session(Target="i-0123456789abcdef0", DocumentName="AWS-RunShellScript")
    assert bad_doc.value.response["Error"]["Code"] == "InvalidDocument"
    assert ssm.resume_session(SessionId=started["SessionId"])["SessionId"] == started["SessionId"]
    assert ssm.terminate_session(SessionId=started["SessionId"])["SessionId"] == started["SessionId"]
    with pytest.raises(ClientError) as gone:
        ssm.resume_session(SessionId=started["SessionId"])
    assert gone.value.response["Error"]["Code"] == "DoesNotExistException"


def test_plugin_port_forward(ssm_endpoint: tuple[str, Path], tmp_path: Path) -> None:
    endpoint, hosts_file = ssm_endpoint
    pid_file = tmp_path / "self.pid"
    pid_file.write_text(f"{__import__('os').getpid()}\n")
    hosts_file.write_text(json.dumps({"i-00000000000000001": str(pid_file)}))
    target = socket.create_server(("127.0.0.1", 0))
    remote_port = target.getsockname()[1]

    def answer() -> None:
        conn, _ = target.accept()
        with conn:
            conn.sendall(b"pong:" + conn.recv(100))

    threading.Thread(target=answer, daemon=True).start()
    local_port = free_port()
    request = {
        "Target": "i-00000000000000001",
        "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": [str(remote_port)], "localPortNumber": [str(local_port)]},
    }
    response = _ssm(endpoint).start_session(**request)
    plugin = Path(sys.executable).parent / "sbw-session-manager-plugin"
    argv = [
        str(plugin),
        json.dumps(response),
        "ap-southeast-1",
        "StartSession",
        "",
        json.dumps(request),
        endpoint,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert f"Starting session with SessionId: {response['SessionId']}\n" in lines
        assert f"Port {local_port} opened for sessionId {response['SessionId']}.\n" in lines
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            conn.sendall(b"ping")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(100) == b"pong:ping"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        target.close()


def test_port_forward_sessions_check_the_port_and_their_data_channel(
    ssm_endpoint: tuple[str, Path], tmp_path: Path
) -> None:
    """The service refuses a bad portNumber; the data channel (the endpoint's relay into the host)
    opens only for that session's token, so a port forward needs no privilege on the caller's side."""
    endpoint, hosts_file = ssm_endpoint
    hosts_file.write_text(json.dumps({"i-00000000000000002": str(tmp_path / "dwh.pid")}))
    ssm = _ssm(endpoint)
    document = "AWS-StartPortForwardingSession"
    with pytest.raises(ClientError) as bad_port:
        ssm.start_session(
            Target="i-00000000000000002", DocumentName=document, Parameters={"portNumber": ["x"]}
        )
    assert bad_port.value.response["Error"]["Code"] == "InvalidParameters"
    started = ssm.start_session(
        Target="i-00000000000000002", DocumentName=document, Parameters={"portNumber": ["3838"]}
    )
    stream = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(started["StreamUrl"]).query))["stream"]
    assert stream == f"{endpoint}/v1/data-channel/{started['SessionId']}"
    url = urllib.parse.urlsplit(stream)

    def upgrade(token: str) -> bytes:
        with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
            head = f"GET {url.path}?token={token} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: sbw-tcp\r\n\r\n"
            conn.sendall(head.encode())
            return conn.recv(200).split(b"\r\n", 1)[0]

    assert b" 403 " in upgrade("not-the-token")
    # The right token, but the host's PID file does not exist: refused, nothing relayed.
    assert b" 502 " in upgrade(urllib.parse.quote(started["TokenValue"]))


def test_plugin_refuses_foreign_sessions() -> None:
    plugin = Path(sys.executable).parent / "sbw-session-manager-plugin"
    response = {"SessionId": "s", "TokenValue": "t", "StreamUrl": "wss://ssmmessages.amazonaws.com/x"}
    done = subprocess.run(
        [str(plugin), json.dumps(response), "ap-southeast-1", "StartSession", "", "{}", "x"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not a sandbox session" in done.stderr
