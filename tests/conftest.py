"""Shared test setup: the fixtures of tests/fixtures/ for every suite, no real AWS, and the markers.

Every test gets exactly one of the markers `unit`, `pg`, `moto`, `hosts`, `index` (what it needs),
assigned here from the fixtures it uses, so no test file has to say it and a new test is grouped by
the fixtures it asks for: `make test-fast` runs `-m unit` (no root, no servers, no network). A marker a
test sets itself wins. See docs/development.md "Test groups".
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.moto",
    "tests.fixtures.postgres",
]

# What each group needs, in the order the first match wins (the heaviest first).
GROUPS = ("hosts", "index", "pg", "moto", "unit")
# The fixtures that bring a service; any test using one (directly or through another fixture) needs it.
PG_FIXTURES = frozenset({"pg_server", "pg_database", "dw_template", "dw_db"})
MOTO_FIXTURES = frozenset({"moto_server", "moto_endpoint_url", "aws_client", "s3_client", "s3_bucket"})
# Modules whose own module-scoped fixtures start what they need without the shared fixtures (a role run
# that creates its own cluster, a network namespace, a subprocess demo, wheels from the package index).
MODULE_NEEDS = {
    "test_dw_schema_role": "pg",  # runs the dw_schema role against a local PostgreSQL cluster (root)
    "test_port_forward": "hosts",  # a real network namespace (root)
    "test_stacks_moto": "moto",  # its own moto server for stacks.yml
    "test_lambda_build": "index",  # pip downloads the Lambda runtime's wheels
}


def group_of(item: pytest.Item) -> str:
    """The one group of a test: an explicit marker, else its module's needs, else its fixtures."""
    own = [name for name in GROUPS if item.get_closest_marker(name)]
    if own:
        return own[0]
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    if module in MODULE_NEEDS:
        return MODULE_NEEDS[module]
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & PG_FIXTURES:
        return "pg"
    if fixtures & MOTO_FIXTURES:
        return "moto"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = group_of(item)
        if not item.get_closest_marker(group):
            item.add_marker(group)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach AWS: fake credentials and a fixed region for every boto3 client."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
