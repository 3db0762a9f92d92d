"""The local collection's modules (collections/ansible_collections/sbw/ops) behave like Ansible modules:
check mode reports the change without making it, a second run reports changed=false, the diff shows
what changes, and a bad argument fails with a message naming it.

The modules run in process (ansible.module_utils.testing.patch_module_args, as ansible-core's own
module tests do), which is fast; one test runs a module through the `ansible` command with the
repository's ansible.cfg, which proves that `sbw.ops.*` resolves (collections_path) and that the module
imports sbw_ops under the Python Ansible gives localhost. The roles and playbooks that call them are
tested in test_apt_repo.py (role, twice, changed=0), test_stacks_moto.py, test_etl_erasure.py and
test_replay_failed.py.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args
from sbw_ops import apt_repo, lambda_build

from tests.apt_repo_support import BASE_STATUS, SMALL_BASE_OPTIONS
from tests.fixtures.moto import S3Bucket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "collections"))


def run_module(name: str, args: dict[str, Any], *, check: bool = False) -> dict[str, Any]:
    """Run sbw.ops.<name> in process (diff on) and return its result; `failed` is set on fail_json."""
    module = importlib.import_module(f"ansible_collections.sbw.ops.plugins.modules.{name}")
    stdout = io.StringIO()
    with (
        patch_module_args({**args, "_ansible_check_mode": check, "_ansible_diff": True}),
        contextlib.redirect_stdout(stdout),
        pytest.raises(SystemExit),
    ):
        module.main()
    return json.loads(stdout.getvalue())


# ------------------------------------------------------------------------------------ apt_repo_key


def test_signing_key_check_mode_creates_nothing_and_the_second_run_changes_nothing(tmp_path: Path) -> None:
    key_dir = tmp_path / "key"
    check = run_module("apt_repo_key", {"key_dir": str(key_dir)}, check=True)
    assert check["changed"] is True and check["fingerprint"] == "" and not key_dir.exists()
    assert check["diff"]["before"] == "key absent\n"
    first, second, check_again = (
        run_module("apt_repo_key", {"key_dir": str(key_dir)}, check=c) for c in (False, False, True)
    )
    assert first["changed"] is True and len(first["fingerprint"]) == 40
    assert (key_dir / apt_repo.PRIVATE_KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert second["changed"] is False and second["fingerprint"] == first["fingerprint"]
    assert check_again["changed"] is False
    assert first["public_key"] == str(key_dir / apt_repo.PUBLIC_KEY_NAME)


def test_signing_key_with_one_half_missing_fails_saying_so(tmp_path: Path) -> None:
    key_dir = tmp_path / "key"
    run_module("apt_repo_key", {"key_dir": str(key_dir)})
    (key_dir / apt_repo.PUBLIC_KEY_NAME).unlink()
    result = run_module("apt_repo_key", {"key_dir": str(key_dir)})
    assert result["failed"] is True
    assert "only half of the signing key" in result["msg"] and str(key_dir) in result["msg"]


def test_a_missing_required_argument_is_named() -> None:
    result = run_module("apt_repo_key", {})
    assert result["failed"] is True and "key_dir" in result["msg"]


# ---------------------------------------------------------------------------- apt_repo_base_status


def _root_tarball(path: Path, status: str) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        data = status.encode()
        info = tarfile.TarInfo("./var/lib/dpkg/status")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_base_status_check_mode_diff_and_second_run(tmp_path: Path) -> None:
    tarball = _root_tarball(tmp_path / "root.tar.gz", BASE_STATUS)
    dest = tmp_path / "state" / "base-status"
    args = {"tarball": str(tarball), "dest": str(dest)}
    check = run_module("apt_repo_base_status", args, check=True)
    assert check["changed"] is True and not dest.exists()
    assert check["diff"]["before"] == "" and check["diff"]["after"] == "base-files 12.4\n"
    first, second = run_module("apt_repo_base_status", args), run_module("apt_repo_base_status", args)
    assert first["changed"] is True and dest.read_text() == BASE_STATUS and first["packages"] == 1
    assert second["changed"] is False
    # the image changed: the diff names the package that moved
    _root_tarball(tarball, BASE_STATUS.replace("Version: 12.4", "Version: 12.4+deb12u5"))
    moved = run_module("apt_repo_base_status", args, check=True)
    assert moved["changed"] is True
    assert (moved["diff"]["before"], moved["diff"]["after"]) == (
        "base-files 12.4\n",
        "base-files 12.4+deb12u5\n",
    )
    assert dest.read_text() == BASE_STATUS


def test_base_status_of_a_missing_or_wrong_tarball_fails_naming_it(tmp_path: Path) -> None:
    missing = run_module(
        "apt_repo_base_status", {"tarball": str(tmp_path / "nope.tar"), "dest": str(tmp_path / "s")}
    )
    assert missing["failed"] is True and "tarball=" in missing["msg"] and "nope.tar" in missing["msg"]
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    wrong = run_module("apt_repo_base_status", {"tarball": str(empty), "dest": str(tmp_path / "s")})
    assert wrong["failed"] is True and "empty.tar" in wrong["msg"]
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------ lambda_build


def _prepared_deps(tmp_path: Path) -> tuple[Path, Path]:
    """A requirements file and a wheel cache already holding its (empty) set: no pip, no index."""
    requirements = tmp_path / "requirements-lambda.txt"
    requirements.write_text("# nothing: the package alone\n")
    cache = tmp_path / "deps"
    (cache / lambda_build.requirements_digest(requirements)).mkdir(parents=True)
    (cache / lambda_build.requirements_digest(requirements) / ".complete").write_text("ok\n")
    return requirements, cache


def test_lambda_build_check_mode_writes_nothing_then_builds_once(tmp_path: Path) -> None:
    requirements, cache = _prepared_deps(tmp_path)
    out = tmp_path / "build" / "lambda"
    args = {"out_dir": str(out), "deps_cache": str(cache), "requirements": str(requirements)}
    check = run_module("lambda_build", args, check=True)
    assert check["changed"] is True and not out.exists()
    first, second, check_again = (run_module("lambda_build", args, check=c) for c in (False, False, True))
    assert check["diff"] == {**check["diff"], "before": "", "after": f"{check['path']}\n"}
    assert first["changed"] is True and Path(first["path"]).is_file()
    assert (first["path"], first["key"], first["sha256"]) == (check["path"], check["key"], check["sha256"])
    assert first["key"] == f"lambda/sbw-clickstream-{first['sha256']}.zip"
    assert second["changed"] is False and second["path"] == first["path"]
    assert check_again["changed"] is False
    assert sorted(path.name for path in out.iterdir()) == [Path(first["path"]).name]  # no scratch left


def test_lambda_build_without_requirements_fails_naming_the_file(tmp_path: Path) -> None:
    result = run_module(
        "lambda_build", {"out_dir": str(tmp_path / "out"), "requirements": str(tmp_path / "missing.txt")}
    )
    assert result["failed"] is True and "requirements=" in result["msg"] and "missing.txt" in result["msg"]


# -------------------------------------------------------------------- apt_repo_read_policy (moto)


def test_read_policy_check_mode_diff_and_second_run(s3_bucket: S3Bucket) -> None:
    args = {"bucket": s3_bucket.name, "prefix": "repo", "endpoint_url": s3_bucket.endpoint_url}
    check = run_module("apt_repo_read_policy", args, check=True)
    assert check["changed"] is True and check["diff"]["before"] == ""
    assert "AptRepositoryThroughGatewayEndpointOnly" in check["diff"]["after"]
    with pytest.raises(s3_bucket.client.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3_bucket.client.get_bucket_policy(Bucket=s3_bucket.name)
    first, second = run_module("apt_repo_read_policy", args), run_module("apt_repo_read_policy", args)
    assert first["changed"] is True and second["changed"] is False
    policy = json.loads(s3_bucket.client.get_bucket_policy(Bucket=s3_bucket.name)["Policy"])
    assert [item["Resource"] for item in policy["Statement"]] == [f"arn:aws:s3:::{s3_bucket.name}/repo/*"]


def test_read_policy_refuses_to_run_without_a_stand_in_endpoint() -> None:
    result = run_module("apt_repo_read_policy", {"bucket": "b", "endpoint_url": ""})
    assert result["failed"] is True and "endpoint_url is empty" in result["msg"]


# -------------------------------------------------------------------------- erase_objects (moto)


def _ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def test_erase_check_mode_counts_and_changes_nothing_then_second_run_is_a_no_op(s3_bucket: S3Bucket) -> None:
    mixed = _ndjson({"event_id": "e1", "user_id": "u-1"}, {"event_id": "e2", "user_id": "u-2"})
    only = _ndjson({"event_id": "e3", "user_id": "u-1"})
    # versioned, as the storage stack makes the raw bucket (old versions are what erasure removes)
    s3_bucket.client.put_bucket_versioning(
        Bucket=s3_bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="events/a.ndjson", Body=mixed)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="events/b.ndjson", Body=only)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="failed/x.json", Body=b'{"body": "\\"u-1\\""}')
    args = {
        "bucket": s3_bucket.name,
        "kind": "user_id",
        "value": "u-1",
        "keys": ["events/a.ndjson", "events/b.ndjson"],
        "endpoint_url": s3_bucket.endpoint_url,
    }
    check = run_module("erase_objects", args, check=True)
    assert check["changed"] is True
    assert (check["rewritten"], check["deleted"], check["failed_deleted"]) == (1, 1, 1)
    assert s3_bucket.keys() == ["events/a.ndjson", "events/b.ndjson", "failed/x.json"]
    assert s3_bucket.read("events/a.ndjson") == mixed
    first, second = run_module("erase_objects", args), run_module("erase_objects", args)
    assert first["changed"] is True and s3_bucket.keys() == ["events/a.ndjson"]
    assert b"u-1" not in s3_bucket.read("events/a.ndjson")
    assert second["changed"] is False and second["unchanged"] == 2
    assert "u-1" not in json.dumps(first)  # the identifier is never echoed back


def test_erase_with_a_bad_kind_fails_naming_the_choices() -> None:
    result = run_module("erase_objects", {"bucket": "b", "kind": "email", "value": "x"})
    assert result["failed"] is True and "kind" in result["msg"] and "user_id" in result["msg"]


# -------------------------------------------------------------------------- replay_failed (moto)


def test_replay_of_an_empty_range_changes_nothing(s3_bucket: S3Bucket) -> None:
    args = {"bucket": s3_bucket.name, "start": "2024-06-01", "end": "2024-06-01"}
    result = run_module("replay_failed", {**args, "endpoint_url": s3_bucket.endpoint_url})
    assert result["changed"] is False and result["summary"]["records"] == 0


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [("soon", "2024-06-01", "start='soon'"), ("2024-06-02", "2024-06-01", "is not after start=2024-06-02")],
)
def test_replay_with_a_bad_range_fails_naming_it(start: str, end: str, named: str) -> None:
    result = run_module("replay_failed", {"bucket": "b-1234", "start": start, "end": end})
    assert result["failed"] is True and named in result["msg"]


# ------------------------------------------------------------------------ apt_repo_publish (moto)


def test_publish_check_mode_uploads_nothing_and_a_republish_changes_nothing(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    base = tmp_path / "status"
    base.write_text(BASE_STATUS)
    args = {
        "packages": ["hello"],
        "base_status": str(base),
        "bucket": s3_bucket.name,
        "prefix": "repo",
        "key_dir": str(tmp_path / "key"),
        "cache_dir": str(apt_repo.DEFAULT_CACHE_DIR),
        "apt_options": list(SMALL_BASE_OPTIONS),
        "endpoint_url": s3_bucket.endpoint_url,
    }
    # check mode before the key exists (a fresh machine in --check): what would be uploaded, nothing more
    check = run_module("apt_repo_publish", args, check=True)
    assert check["changed"] is True and check["uploaded_debs"] >= 1, check
    assert check["uploaded_indices"][-1] == "dists/bookworm/InRelease"
    assert check["diff"]["before"] == "" and "\nhello " in "\n" + check["diff"]["after"]
    assert s3_bucket.keys() == [] and not (tmp_path / "key").exists()
    run_module("apt_repo_key", {"key_dir": args["key_dir"]})
    first, second = run_module("apt_repo_publish", args), run_module("apt_repo_publish", args)
    assert first["changed"] is True and first["uploaded_debs"] == check["uploaded_debs"]
    assert second["changed"] is False and second["uploaded_debs"] == 0 and second["uploaded_indices"] == []
    assert second["diff"]["before"] == second["diff"]["after"] == check["diff"]["after"]
    assert run_module("apt_repo_publish", args, check=True)["changed"] is False


def test_publish_without_the_base_status_fails_naming_it(tmp_path: Path) -> None:
    args = {
        "packages": ["hello"],
        "base_status": str(tmp_path / "no-status"),
        "bucket": "b",
        "key_dir": str(tmp_path / "key"),
        "cache_dir": str(tmp_path / "cache"),
    }
    result = run_module("apt_repo_publish", args)
    assert result["failed"] is True and "base_status=" in result["msg"] and "no-status" in result["msg"]


# ------------------------------------------------------------------- through ansible and ansible.cfg


def test_the_collection_resolves_through_ansible_cfg_under_the_venv_python(tmp_path: Path) -> None:
    tarball = _root_tarball(tmp_path / "root.tar.gz", BASE_STATUS)
    dest = tmp_path / "base-status"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible")),
            "localhost",
            "-m",
            "sbw.ops.apt_repo_base_status",
            "-a",
            json.dumps({"tarball": str(tarball), "dest": str(dest)}),
            "--check",
            "--diff",
        ],
        cwd=tmp_path,  # not the repository: ANSIBLE_CONFIG alone must find the collection
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CHANGED" in done.stdout and "+base-files 12.4" in done.stdout, done.stdout
    assert not dest.exists()
