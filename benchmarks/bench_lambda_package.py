"""Lambda package benchmark: what the User-Agent enrichment (PyPI ua-parser + ua-parser-builtins)
costs the deployment zip and the ingest function's cold start, as ratios to the same build without it.

1. zip size: the real build (`sbw_ops.lambda_build`, wheels for the Lambda runtime) vs the same build
   from the requirements without the two ua-parser packages                     printed as a ratio
2. cold import of `sbw_clickstream.ingest_handler` from the extracted zip in fresh interpreters (the
   zip's own bytecode, as on a read-only /var/task) vs the same import with `ua_parser` replaced by
   an empty stand-in module (everything else identical)                         printed as a ratio
3. the first request's enrichment after that import (the lazily compiled uap-core regexes a first
   User-Agent tries), printed beside the import time: import + first parse vs the baseline import

Needs PyPI (the wheels are fetched once into .cache/lambda-deps, as `make package` does).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "lambda_src"), str(ROOT / "controller")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sbw_ops import lambda_build  # noqa: E402

RUNS = 11
UA_PACKAGES = ("ua-parser", "ua-parser-builtins")
FIRST_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)

# Run in a fresh interpreter with the extracted zip first on sys.path (boto3/botocore, which the
# Lambda runtime provides, come from this interpreter's site-packages). `stub` replaces ua_parser
# by a module with the names enrich_useragent imports, so the baseline imports everything else.
_PROBE = r"""
import sys, time, types
sys.path.insert(0, sys.argv[1])
stub = sys.argv[2] == "stub"
if stub:
    fake = types.ModuleType("ua_parser")
    fake.BasicResolver = fake.Parser = lambda *a: None
    fake.load_lazy_builtins = lambda: None
    fake.Domain = types.SimpleNamespace(ALL=None)
    sys.modules["ua_parser"] = fake
start = time.perf_counter()
import sbw_clickstream.ingest_handler
imported = time.perf_counter()
first = imported
if not stub:
    from sbw_clickstream.enrich_useragent import classify_user_agent
    classify_user_agent(sys.argv[3])
    first = time.perf_counter()
mod = sys.modules["sbw_clickstream.enrich_useragent"].__file__
assert mod.startswith(sys.argv[1]), mod
print(imported - start, first - imported)
"""


def _without_ua_parser(requirements: Path, target: Path) -> Path:
    lines = requirements.read_text().splitlines()
    kept = [line for line in lines if line.split("==")[0].strip().lower() not in UA_PACKAGES]
    assert len(kept) == len(lines) - len(UA_PACKAGES), "requirements-lambda.txt lacks the ua-parser pins"
    target.write_text("\n".join(kept) + "\n")
    return target


def _probe(extracted: Path, mode: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-E", "-c", _PROBE, str(extracted), mode, FIRST_UA],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def _cold(extracted: Path) -> tuple[float, float, float]:
    """(import seconds with ua-parser, median first-parse seconds, import seconds with the stand-in):
    best of RUNS fresh interpreters each, the two kinds alternating so that both see the same load of
    a shared machine."""
    real: list[tuple[float, float]] = []
    stub: list[float] = []
    for _ in range(RUNS):
        real.append(_probe(extracted, "real"))
        stub.append(_probe(extracted, "stub")[0])
    return min(r[0] for r in real), statistics.median(r[1] for r in real), min(stub)


def main() -> None:
    cache = ROOT / ".cache" / "lambda-deps"
    with tempfile.TemporaryDirectory(prefix="bench-lambda-") as tmp:
        work = Path(tmp)
        full = lambda_build.build(work / "full", deps_cache=cache)
        plain_reqs = _without_ua_parser(lambda_build.REQUIREMENTS, work / "requirements-no-ua.txt")
        plain = lambda_build.build(work / "plain", requirements=plain_reqs, deps_cache=cache)
        names = zipfile.ZipFile(full.path).namelist()
        assert any(n.startswith("ua_parser_builtins/") for n in names), "the zip lacks ua-parser-builtins"
        assert not any(n.startswith("ua_parser") for n in zipfile.ZipFile(plain.path).namelist())
        print(
            f"lambda zip: {full.size / 1e6:.2f} MB with ua-parser vs {plain.size / 1e6:.2f} MB without: "
            f"ratio {full.size / plain.size:.3f} (+{(full.size - plain.size) / 1e3:.0f} kB)"
        )
        extracted = work / "extracted"
        zipfile.ZipFile(full.path).extractall(extracted)
        with_ua, first_parse, baseline = _cold(extracted)
        print(
            f"cold import of sbw_clickstream.ingest_handler from the zip: {with_ua * 1e3:.1f} ms with "
            f"ua-parser vs {baseline * 1e3:.1f} ms without (best of {RUNS}): ratio {with_ua / baseline:.2f}"
        )
        print(
            f"  first User-Agent parse after it (lazy regex compile): {first_parse * 1e3:.1f} ms; import + "
            f"first parse vs baseline import: ratio {(with_ua + first_parse) / baseline:.2f}"
        )


if __name__ == "__main__":
    main()
