"""The Lambda zip (sbw_ops.lambda_build): reproducible to the byte, and complete on its own.

"Complete" is checked the way Lambda runs it: the zip extracted alone on sys.path of an isolated
interpreter (no site-packages), plus only what the Lambda Python runtime itself provides (boto3 and its
dependencies); both handlers and every module of the package must import, and every module loaded must
come from the zip, the standard library or that runtime set.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from sbw_ops import lambda_build

pytestmark = pytest.mark.xdist_group("lambda_build")

# Modules the AWS Lambda Python 3.11 runtime provides, so the zip must not need to ship them.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")

IMPORT_PROBE = r"""
import importlib, importlib.machinery, json, os, pkgutil, sys
zipdir, site, runtime = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))

class RuntimeProvided:
    # What the Lambda runtime has besides the standard library (boto3 & co.), from the test venv.
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if "." not in name and name in runtime:
            return importlib.machinery.PathFinder.find_spec(name, [site])
        return None

sys.path.insert(0, zipdir)
sys.meta_path.append(RuntimeProvided)
import sbw_clickstream
names = sorted(m.name for m in pkgutil.walk_packages(sbw_clickstream.__path__, "sbw_clickstream."))
for name in ["sbw_clickstream.ingest_handler", "sbw_clickstream.etl_handler", *names]:
    importlib.import_module(name)
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"modules": names, "files": files}))
"""


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[lambda_build.BuildResult, ...]:
    """Two builds from scratch (dependencies installed afresh each time, no cache)."""
    root = tmp_path_factory.mktemp("lambda-build")
    return tuple(lambda_build.build(root / name, deps_cache=None) for name in ("first", "second"))


def test_two_builds_are_byte_identical_and_named_by_their_hash(two_builds: tuple) -> None:
    first, second = two_builds
    assert Path(first.path).read_bytes() == Path(second.path).read_bytes()
    assert first.sha256 == second.sha256
    assert Path(first.path).name == f"sbw-clickstream-{first.sha256}.zip"
    assert first.key == f"lambda/sbw-clickstream-{first.sha256}.zip"
    assert first.changed and second.changed


def test_rebuild_into_the_same_place_reports_no_change(two_builds: tuple, tmp_path: Path) -> None:
    cache = tmp_path / "deps"
    out = Path(two_builds[0].path).parent
    again = lambda_build.build(out, deps_cache=cache)
    assert again.sha256 == two_builds[0].sha256
    assert again.changed is False
    assert (cache / lambda_build.requirements_digest(lambda_build.REQUIREMENTS) / ".complete").exists()


def test_entries_sorted_with_fixed_times_and_modes(two_builds: tuple) -> None:
    with zipfile.ZipFile(two_builds[0].path) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {lambda_build.ZIP_EPOCH}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_ships_the_package_and_pinned_wheels_for_the_lambda_runtime_only(two_builds: tuple) -> None:
    with zipfile.ZipFile(two_builds[0].path) as archive:
        names = archive.namelist()
        wheel_tags = {
            n: archive.read(n).decode() for n in names if n.endswith(".dist-info/WHEEL") and "psycopg2" in n
        }
    tops = {n.split("/")[0] for n in names}
    assert "sbw_clickstream" in tops
    assert not {"sbw_ops", "tests", "benchmarks", "bin"} & tops
    # Bytecode for every module, and only the build's own (none copied from a controller's __pycache__).
    sources = [n for n in names if n.endswith(".py")]
    compiled = {n for n in names if n.endswith(".pyc")}
    assert compiled == {lambda_build._pyc_name(n) for n in sources}
    assert not [n for n in names if n.endswith(".pyo")]
    assert "sbw_clickstream/schemas/clickstream-event.v1.json" in names
    # Every pinned requirement is there, at its pinned version.
    pins = [
        line.split("==")
        for line in lambda_build.REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name, version in pins:
        dist = f"{name.replace('-', '_').lower()}-{version}.dist-info/"
        assert any(n.lower().startswith(dist) for n in names), dist
    # Binary wheels are the Lambda runtime's (CPython 3.11, manylinux x86_64), not the controller's choice.
    (tags,) = wheel_tags.values()
    assert "cp311-cp311-manylinux" in tags and "x86_64" in tags
    assert any(n.startswith("psycopg2/_psycopg.cpython-311-x86_64-linux-gnu") for n in names)


def test_the_zip_alone_imports_both_handlers(two_builds: tuple, tmp_path: Path) -> None:
    extracted = tmp_path / "task"
    with zipfile.ZipFile(two_builds[0].path) as archive:
        archive.extractall(extracted)
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_REGION": "ap-southeast-1",
        "AWS_DEFAULT_REGION": "ap-southeast-1",
        "RAW_BUCKET": "clickstream-s3-ingest",
        "DWH_HOST": "10.0.128.4",
        "DWH_PORT": "5432",
        "DWH_USER": "sbw_etl",
        "DWH_PASSWORD_PARAM": "/sbw/dwh/etl_password",
        "DWH_DATABASE": "clickstream_dw",
    }
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT_PROBE, str(extracted), site, ",".join(RUNTIME_PROVIDED)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "sbw_clickstream.ingest_handler" in report["modules"]
    assert "sbw_clickstream.etl_handler" in report["modules"]
    stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
    runtime_dirs = tuple(f"{site}/{name}" for name in RUNTIME_PROVIDED)
    foreign = {
        name: file
        for name, file in report["files"].items()
        if file
        and not file.startswith(str(extracted))
        and not file.startswith(stdlib)
        and not file.startswith(runtime_dirs)
    }
    assert foreign == {}
    psycopg2 = report["files"].get("psycopg2")
    assert psycopg2 and psycopg2.startswith(str(extracted))


def test_shipped_bytecode_is_unchecked_hash_of_the_shipped_source(two_builds: tuple) -> None:
    """/var/task is read-only: the runtime must load the shipped .pyc as is, never recompile."""
    with zipfile.ZipFile(two_builds[0].path) as archive:
        source = archive.read("sbw_clickstream/ingest_handler.py")
        pyc = archive.read(lambda_build._pyc_name("sbw_clickstream/ingest_handler.py"))
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked
    assert pyc[8:16] == importlib.util.source_hash(source)
