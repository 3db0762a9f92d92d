"""Joining and leaving the daemon all sandboxes share (the apt proxy): roles/sandbox/files/sbw-shared-user.sh.

Sandboxes run side by side (the two pytest workers): one leaving as the
last user while another joins must not remove the joiner's run directory or stop its daemon (CI once
failed with "Destination directory .../conf does not exist" for exactly that). Each worker here joins,
writes into the run directory, starts the shared daemon as apt_proxy.yml does, and checks before it
leaves that its directory and the daemon are still there.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "roles" / "sandbox" / "files"
SHARED = str(SCRIPTS / "sbw-shared-user.sh")
DAEMON = str(SCRIPTS / "sbw-daemon.sh")


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def test_join_and_leave_report_each_step_and_the_last_user_removes_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "proxy"
    pidfile = str(run_dir / "daemon.pid")
    assert _run(SHARED, "join", str(run_dir), "a") == "joined"
    assert _run(SHARED, "join", str(run_dir), "a") == "present"
    assert _run(SHARED, "join", str(run_dir), "b") == "joined"
    assert _run(DAEMON, "start", pidfile, str(tmp_path / "log"), "sleep", "600") == "started"
    assert _run(SHARED, "leave", str(run_dir), "a", pidfile) == "left"
    assert _run(SHARED, "leave", str(run_dir), "a", pidfile) == "absent"  # again: nothing to do (changed=0)
    subprocess.run([DAEMON, "status", pidfile], check=True)  # b still uses it
    assert _run(SHARED, "leave", str(run_dir), "b", pidfile) == "last"
    assert not run_dir.exists()
    assert _run(SHARED, "leave", str(run_dir), "b", pidfile) == "absent"


def test_a_bad_user_name_is_refused(tmp_path: Path) -> None:
    result = subprocess.run([SHARED, "join", str(tmp_path / "proxy"), "../x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "bad user name" in result.stderr
    assert not (tmp_path / "x").exists()


def test_users_joining_while_the_last_one_leaves_keep_their_directory_and_daemon(tmp_path: Path) -> None:
    run_dir = tmp_path / "proxy"
    pidfile = str(run_dir / "daemon.pid")
    log = str(tmp_path / "daemon.log")
    failures: list[str] = []

    def worker(name: str) -> None:
        for round_ in range(40):
            _run(SHARED, "join", str(run_dir), name)
            try:
                (run_dir / "conf").mkdir(exist_ok=True)
                (run_dir / "conf" / f"{name}.conf").write_text(name)
                _run(DAEMON, "start", pidfile, log, "sleep", "600")
                if subprocess.run([DAEMON, "status", pidfile]).returncode != 0:
                    failures.append(f"{name} round {round_}: the shared daemon was stopped under it")
                if not (run_dir / "users" / name).exists():
                    failures.append(f"{name} round {round_}: its token was removed")
            except OSError as error:
                failures.append(f"{name} round {round_}: {error}")
            _run(SHARED, "leave", str(run_dir), name, pidfile)

    threads = [threading.Thread(target=worker, args=(f"user{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert not run_dir.exists(), "the last user to leave stops the daemon and removes the run directory"


@pytest.fixture(autouse=True)
def _no_daemon_left(tmp_path: Path) -> Iterator[None]:
    yield
    pidfile = tmp_path / "proxy" / "daemon.pid"
    if pidfile.exists():
        _run(DAEMON, "stop", str(pidfile))
