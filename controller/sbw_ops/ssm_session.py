"""The sandbox's Session Manager: an SSM endpoint stand-in and a `session-manager-plugin` stand-in.

moto 5.x models SSM Parameter Store but has no sessions. ``serve`` is a small HTTP endpoint that
answers ``StartSession``, ``ResumeSession`` and ``TerminateSession`` itself and forwards every other
SSM call to moto unchanged (point boto3 at it with ``AWS_ENDPOINT_URL_SSM``). A session's
``StreamUrl`` names the sandbox host's PID file, so the plugin stand-in needs no configuration of its
own. Which host a target is comes from the hosts file the sandbox writes (JSON, key -> PID file): the
key is the instance id itself, or the instance's ``Name`` tag in moto's EC2 (the hosts stack creates
the instances there, as on AWS, and each nspawn host stands behind the instance named after it: what
the SSM agent's registration does on AWS).

``plugin_main`` is installed as the console script ``sbw-session-manager-plugin`` (not the real name:
the venv's bin on PATH must never hide the real plugin from an AWS session; the sandbox links it as
``session-manager-plugin`` where it needs it) and is called exactly as the AWS CLI and amazon.aws's
``aws_ssm`` connection call the real one::

    session-manager-plugin RESPONSE_JSON REGION StartSession PROFILE REQUEST_JSON ENDPOINT_URL

It prints ``Starting session with SessionId: ...`` and then either relays stdin/stdout to
``/bin/sh -i`` in a pty of its own, run as ``ssm-user`` inside the host (nsenter into its
namespaces; like the agent, the first session creates ``ssm-user`` with passwordless sudo in
/etc/sudoers.d/ssm-agent-users), or, for document ``AWS-StartPortForwardingSession``, listens on
127.0.0.1:localPortNumber and carries each connection over the session's data channel, as the real
plugin does over ``ssmmessages``: the endpoint (which runs as root with the sandbox, standing in for
the service and the host's agent) relays it to portNumber inside the host's network namespace. So a
port forward needs no privilege on the operator's side, as on AWS.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pty
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SHELL_DOCUMENT = "SSM-SessionManagerRunShell"
PORT_FORWARD_DOCUMENT = "AWS-StartPortForwardingSession"
DOCUMENTS = (SHELL_DOCUMENT, PORT_FORWARD_DOCUMENT)
STREAM_SCHEME = "sbw-sandbox"
# The data channel of a port-forward session: `GET DATA_CHANNEL_PATH<session id>` with this Upgrade,
# answered 101, then raw bytes both ways (ssmmessages' websocket, without the framing).
DATA_CHANNEL_PATH = "/v1/data-channel/"
DATA_CHANNEL_UPGRADE = "sbw-tcp"
SSM_USER = "ssm-user"
# What the SSM agent's shell starts with: a clean environment, not the controller's.
SHELL_ENV = [
    "HOME=/home/ssm-user",
    "USER=ssm-user",
    "LOGNAME=ssm-user",
    "SHELL=/bin/sh",
    "TERM=vt220",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
]

# What the SSM agent does before a host's first session: create ssm-user (home, the system's default
# shell) with passwordless sudo in /etc/sudoers.d/ssm-agent-users. Idempotent.
ENSURE_SSM_USER = (
    f"{{ id -u {SSM_USER} >/dev/null 2>&1 || useradd --create-home {SSM_USER}; }} && "
    "if [ ! -e /etc/sudoers.d/ssm-agent-users ]; then mkdir -p /etc/sudoers.d && "
    f"printf '%s\\n' '{SSM_USER} ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/ssm-agent-users.tmp && "
    "chmod 0440 /etc/sudoers.d/ssm-agent-users.tmp && "
    "mv /etc/sudoers.d/ssm-agent-users.tmp /etc/sudoers.d/ssm-agent-users; fi"
)


class SessionError(Exception):
    """A request the real service would refuse: (HTTP status, AWS error type, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def moto_instance_name(moto_url: str, region: str) -> Callable[[str], str | None]:
    """The ``Name`` tag of a running instance in moto's EC2 (None: no such instance)."""

    def name_of(instance_id: str) -> str | None:
        import boto3  # the endpoint only; the plugin stand-in never needs it
        from botocore.exceptions import ClientError

        ec2 = boto3.client(
            "ec2", endpoint_url=moto_url, region_name=region,
            aws_access_key_id="sandbox", aws_secret_access_key="sandbox",  # noqa: S106 - moto takes any
        )  # fmt: skip
        try:
            found = ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError:
            return None
        for reservation in found["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] == "running":
                    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                    return tags.get("Name")
        return None

    return name_of


class SessionStore:
    """Open sessions, and where each target lives (the hosts file is re-read per call: hosts come
    and go). ``name_of`` maps an instance id to its Name tag, the hosts file's other kind of key."""

    def __init__(self, hosts_file: Path, name_of: Callable[[str], str | None] | None = None) -> None:
        self.hosts_file = hosts_file
        self.name_of = name_of
        self.sessions: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()

    def _pid_file(self, target: str) -> str:
        try:
            hosts = json.loads(self.hosts_file.read_text())
        except (OSError, ValueError):
            hosts = {}
        if target not in hosts and self.name_of is not None:
            name = self.name_of(target)
            if name in hosts:
                return str(hosts[name])
        if target not in hosts:
            raise SessionError(400, "TargetNotConnected", f"{target} is not connected.")
        return str(hosts[target])

    def _response(self, session_id: str) -> dict[str, str]:
        session = self.sessions[session_id]
        fields = {"pid_file": session["pid_file"], "document": session["document"]}
        if session.get("stream"):
            fields["stream"] = session["stream"]
        query = urllib.parse.urlencode(fields)
        return {
            "SessionId": session_id,
            "TokenValue": session["token"],
            "StreamUrl": f"{STREAM_SCHEME}://{session['target']}/{session_id}?{query}",
        }

    def start(self, request: dict[str, Any], endpoint: str = "") -> dict[str, str]:
        """A new session; ``endpoint`` (this server as the caller reached it) carries its data channel."""
        target = request.get("Target")
        if not isinstance(target, str) or not target:
            raise SessionError(400, "ValidationException", "Target is required.")
        document = request.get("DocumentName") or SHELL_DOCUMENT
        if document not in DOCUMENTS:
            raise SessionError(400, "InvalidDocument", f"Document {document} is not supported here.")
        port = _forwarded_port(request.get("Parameters") or {}) if document == PORT_FORWARD_DOCUMENT else ""
        pid_file = self._pid_file(target)
        session_id = f"sandbox-{secrets.token_hex(8)}"
        stream = f"{endpoint}{DATA_CHANNEL_PATH}{session_id}" if port and endpoint else ""
        session = {"target": target, "document": document, "pid_file": pid_file, "port": port,
                   "token": secrets.token_urlsafe(32), "stream": stream}  # fmt: skip
        with self.lock:
            self.sessions[session_id] = session
            return self._response(session_id)

    def channel(self, session_id: str, token: str) -> tuple[str, int]:
        """(PID file, port) of an open port-forward session, for its data channel."""
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None or not session.get("port"):
            raise SessionError(404, "DoesNotExistException", f"Session {session_id} not found.")
        if not secrets.compare_digest(token, session["token"]):
            raise SessionError(403, "AccessDeniedException", "The session token does not match.")
        return session["pid_file"], int(session["port"])

    def resume(self, request: dict[str, Any]) -> dict[str, str]:
        with self.lock:
            if request.get("SessionId") not in self.sessions:
                raise SessionError(
                    400, "DoesNotExistException", f"Session {request.get('SessionId')} not found."
                )
            return self._response(request["SessionId"])

    def terminate(self, request: dict[str, Any]) -> dict[str, str]:
        session_id = str(request.get("SessionId", ""))
        with self.lock:
            # Idempotent, like the service: terminating an ended session succeeds.
            self.sessions.pop(session_id, None)
        return {"SessionId": session_id}


def _forwarded_port(parameters: dict[str, Any]) -> str:
    """AWS-StartPortForwardingSession's portNumber, checked as the service checks it."""
    value = parameters.get("portNumber")
    value = value[0] if isinstance(value, list) and value else value
    if not str(value or "").isdigit() or not 0 < int(str(value)) < 65536:
        raise SessionError(400, "InvalidParameters", f"portNumber must be a port (1-65535), got {value!r}.")
    return str(int(str(value)))


def make_handler(store: SessionStore, moto_url: str) -> type[BaseHTTPRequestHandler]:
    """The request handler: session calls answered here, everything else proxied to moto."""
    moto = urllib.parse.urlsplit(moto_url)
    actions = {
        "StartSession": store.start,
        "ResumeSession": store.resume,
        "TerminateSession": store.terminate,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

        def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "server",
                    "date",
                ):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self, body: bytes) -> None:
            conn = http.client.HTTPConnection(moto.hostname or "127.0.0.1", moto.port or 80, timeout=300)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                self._reply(answer.status, answer.read(), answer.getheaders())
            finally:
                conn.close()

        def _data_channel(self) -> None:
            """Relay this connection to the session's port inside the host (what the agent does)."""
            path = urllib.parse.urlsplit(self.path)
            session_id = path.path[len(DATA_CHANNEL_PATH) :]
            token = dict(urllib.parse.parse_qsl(path.query)).get("token", "")
            try:
                pid_file, port = store.channel(session_id, token)
                pid = int(Path(pid_file).read_text().split()[0])
            except SessionError as exc:
                self._reply(exc.status, json.dumps({"__type": exc.code, "message": str(exc)}).encode(), [])
                return
            except (OSError, ValueError, IndexError):
                self._reply(
                    502, b'{"__type": "TargetNotConnected", "message": "the host is not running"}', []
                )
                return
            self.close_connection = True
            self.wfile.write(
                f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {DATA_CHANNEL_UPGRADE}\r\n"
                "Connection: Upgrade\r\n\r\n".encode()
            )
            self.wfile.flush()
            sock = self.connection
            relay = subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", "--", "socat", "-", f"TCP:127.0.0.1:{port}"],
                stdin=sock.fileno(), stdout=sock.fileno(), stderr=subprocess.DEVNULL,
            )  # fmt: skip
            relay.wait()

        def _handle(self) -> None:
            if self.path.startswith(DATA_CHANNEL_PATH) and (
                self.headers.get("Upgrade", "").lower() == DATA_CHANNEL_UPGRADE
            ):
                self._data_channel()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
            if action not in actions:
                self._proxy(body)
                return
            json_type = [("Content-Type", "application/x-amz-json-1.1")]
            try:
                request = json.loads(body or b"{}")
                request = request if isinstance(request, dict) else {}
                if action == "StartSession":
                    result = store.start(request, f"http://{self.headers.get('Host', '')}")
                else:
                    result = actions[action](request)
            except SessionError as exc:
                error = {"__type": exc.code, "message": str(exc)}
                self._reply(exc.status, json.dumps(error).encode(), json_type)
                return
            except ValueError:
                error = {"__type": "SerializationException", "message": "request body is not JSON"}
                self._reply(400, json.dumps(error).encode(), json_type)
                return
            self._reply(200, json.dumps(result).encode(), json_type)

        do_POST = _handle  # noqa: N815 - http.server's naming
        do_GET = _handle  # noqa: N815

    return Handler


def serve(host: str, port: int, moto_url: str, hosts_file: Path, region: str) -> None:
    """Run the endpoint until SIGTERM."""
    store = SessionStore(hosts_file, moto_instance_name(moto_url, region))
    server = ThreadingHTTPServer((host, port), make_handler(store, moto_url))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"ssm_session: serving on http://{host}:{server.server_port}, forwarding to {moto_url}", flush=True)
    server.serve_forever()


# --- the session-manager-plugin stand-in -------------------------------------------------------


def _host_pid(pid_file: str) -> int:
    try:
        return int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise SystemExit(f"session-manager-plugin: the host is not running ({pid_file}: {exc})") from exc


def _nsenter(pid: int) -> list[str]:
    """Into every namespace of the host's PID 1, its root and working directory."""
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"]


def _ensure_ssm_user(pid: int) -> None:
    done = subprocess.run(
        [*_nsenter(pid), "/bin/sh", "-c", ENSURE_SSM_USER],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"session-manager-plugin: cannot create {SSM_USER}: {done.stderr.strip()}")


def _shell(pid: int) -> int:
    """Relay stdin/stdout to /bin/sh -i as ssm-user inside the host, in a pty of our own.

    The pty's session lives inside the host, as the agent's does: the process started here is a
    session leader without a terminal, and `setsid --ctty` inside the host's PID namespace makes the
    pty the controlling terminal of a session there. (A session led from outside that namespace
    leaves the interactive shell unable to set the terminal's foreground process group, so every
    pipeline runs in the background and its writes fail with EIO: the first `ansible` command dies.)
    """
    _ensure_ssm_user(pid)
    argv = [*_nsenter(pid), "setsid", "--ctty", "--wait", "runuser", "-u", SSM_USER, "--",
            "env", "-i", *SHELL_ENV, "/bin/sh", "-i"]  # fmt: skip
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd="/", start_new_session=True, close_fds=True
    )
    os.close(slave)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    open_fds = [master, stdin]
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [])
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the shell is gone
                data = b""
            if not data:
                break
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if data:
                os.write(master, data)
            else:  # the caller closed stdin: end the shell as the agent would
                os.write(master, b"\nexit\n")
                open_fds.remove(stdin)
    return proc.wait()


def _open_channel(stream_url: str, token: str) -> socket.socket:
    """Open the session's data channel on the endpoint (the real plugin's ssmmessages websocket)."""
    url = urllib.parse.urlsplit(stream_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30)
    query = urllib.parse.urlencode({"token": token})
    sock.sendall(
        f"GET {url.path}?{query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: {DATA_CHANNEL_UPGRADE}\r\n"
        "Connection: Upgrade\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)  # byte by byte: nothing past the header may be swallowed
        if not data:
            break
        head += data
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        sock.close()
        raise OSError(f"data channel refused: {status.decode(errors='replace')}")
    sock.settimeout(None)
    return sock


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay(conn: socket.socket, stream_url: str, token: str, session_id: str) -> None:
    """One forwarded connection over its own data channel, both directions until each side ends."""
    with conn:
        try:
            channel = _open_channel(stream_url, token)
        except OSError as exc:
            print(f"Connection to [{session_id}] failed: {exc}", file=sys.stderr, flush=True)
            return
        with channel:
            back = threading.Thread(target=_pump, args=(channel, conn), daemon=True)
            back.start()
            _pump(conn, channel)
            back.join()


def _port_forward(stream_url: str, token: str, session_id: str, parameters: dict[str, Any]) -> int:
    def first(name: str) -> int:
        value = parameters.get(name)
        value = value[0] if isinstance(value, list) and value else value
        try:
            return int(str(value))
        except ValueError as exc:
            raise SystemExit(
                f"session-manager-plugin: parameter {name} must be a port, got {value!r}"
            ) from exc

    local = first("localPortNumber") if "localPortNumber" in parameters else 0
    listener = socket.create_server(("127.0.0.1", local), reuse_port=False)
    print(f"Port {listener.getsockname()[1]} opened for sessionId {session_id}.", flush=True)
    print("Waiting for connections...", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        conn, _ = listener.accept()
        print(f"Connection accepted for session [{session_id}]", flush=True)
        threading.Thread(target=_relay, args=(conn, stream_url, token, session_id), daemon=True).start()


def plugin_main(argv: list[str] | None = None) -> int:
    """`session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST ENDPOINT`."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("--version", "-version"):
        print("1.2.0.0-sbw-sandbox")
        return 0
    if len(args) < 3 or args[2] != "StartSession":
        usage = "RESPONSE_JSON REGION StartSession [PROFILE REQUEST_JSON ENDPOINT]"
        print(f"usage: session-manager-plugin {usage}", file=sys.stderr)
        return 2
    # Plugins since 1.2.497.0 may get the name of an environment variable holding the response.
    response = json.loads(os.environ[args[0]] if args[0] in os.environ else args[0])
    request = json.loads(args[4]) if len(args) > 4 and args[4] else {}
    stream = urllib.parse.urlsplit(response.get("StreamUrl", ""))
    if stream.scheme != STREAM_SCHEME:
        print(f"session-manager-plugin: not a sandbox session: {stream.geturl()!r}", file=sys.stderr)
        return 2
    query = dict(urllib.parse.parse_qsl(stream.query))
    document = request.get("DocumentName") or query.get("document") or SHELL_DOCUMENT
    session_id = response["SessionId"]
    if document == PORT_FORWARD_DOCUMENT:
        if not query.get("stream"):
            print("session-manager-plugin: the session has no data channel (StreamUrl)", file=sys.stderr)
            return 2
        print(f"\nStarting session with SessionId: {session_id}", flush=True)
        return _port_forward(
            query["stream"], response["TokenValue"], session_id, request.get("Parameters") or {}
        )
    pid = _host_pid(query["pid_file"])
    print(f"\nStarting session with SessionId: {session_id}", flush=True)
    return _shell(pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sbw_ops.ssm_session", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--moto-url", required=True, help="where every other SSM call goes")
    parser.add_argument(
        "--hosts-file", type=Path, required=True, help="JSON {instance id or Name tag: PID file}"
    )
    parser.add_argument("--region", default="ap-southeast-1", help="moto's EC2 region (Name tags)")
    options = parser.parse_args(argv)
    serve(options.host, options.port, options.moto_url, options.hosts_file, options.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
