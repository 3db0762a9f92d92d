"""The OpenAPI document: generated from the contract (in sync), valid, and honoured by the local API.

schemathesis generates requests (valid and invalid) from the document and sends them over real HTTP
to the local adapter serving the real handler (S3 on a moto server): no 5xx, and every response
conforms to the document (status code, content type, headers, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from sbw_clickstream import contract
from sbw_ops import openapi_gen
from sbw_ops.local_api import LocalApi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.moto import S3Bucket
from tests.ingest_support import valid_event
from tests.service_support import running_local_api

DOCUMENT = yaml.safe_load(openapi_gen.OPENAPI_PATH.read_text(encoding="utf-8"))
SCHEMA = schemathesis.openapi.from_path(str(openapi_gen.OPENAPI_PATH))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_document_is_generated_from_the_contract() -> None:
    assert openapi_gen.OPENAPI_PATH.read_text(encoding="utf-8") == openapi_gen.render(), (
        "run: python -m sbw_ops.openapi_gen"
    )
    assert openapi_gen.main(["--check"]) == 0


def test_document_is_valid_openapi_with_the_integration_placeholder() -> None:
    validate(DOCUMENT)
    post = DOCUMENT["paths"]["/clickstream"]["post"]
    integration = post["x-amazon-apigateway-integration"]
    assert integration["uri"] == "${IngestFunctionArn}" and integration["payloadFormatVersion"] == "2.0"
    assert "${IngestFunctionArn}" in openapi_gen.OPENAPI_PATH.read_text().split("---")[0]
    assert set(post["responses"]) == {"200", "400", "404", "405", "413", "415", "503"}


def test_event_schema_is_the_contract_translated() -> None:
    event = DOCUMENT["components"]["schemas"]["ClickstreamEvent"]
    assert list(event["properties"]) == list(contract.EVENT_FIELDS)
    assert event["required"] == list(contract.REQUIRED_FIELDS)
    assert event["additionalProperties"] is False
    for name, prop in contract.EVENT_SCHEMA["properties"].items():
        translated = event["properties"][name]
        kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        assert translated["type"] in kinds and translated.get("nullable", False) == ("null" in kinds)
        for key in ("pattern", "maxLength", "minLength", "minimum", "maximum", "enum"):
            assert translated.get(key) == prop.get(key), (name, key)
    batch = DOCUMENT["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, contract.MAX_EVENTS_PER_REQUEST)


@pytest.fixture
def local_api(s3_bucket: S3Bucket) -> Iterator[LocalApi]:
    with running_local_api(s3_bucket, s3=s3_bucket.client) as api:
        yield api


@pytest.fixture
def api_url(local_api: LocalApi) -> str:
    return local_api.url


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_document(case: schemathesis.Case, api_url: str, s3_bucket: S3Bucket) -> None:
    response = case.call_and_validate(base_url=api_url, checks=CHECKS)
    assert response.status_code < 500
    if response.status_code == 200:
        key = response.json()["key"]
        assert key in s3_bucket.keys("events/")


def test_accepted_and_rejected_responses_conform(api_url: str, s3_bucket: S3Bucket) -> None:
    """Explicit cases for the paths random generation rarely reaches (in-window timestamps)."""
    operation = SCHEMA["/clickstream"]["POST"]
    single = operation.Case(body=valid_event(), media_type="application/json")
    assert single.call_and_validate(base_url=api_url, checks=CHECKS).status_code == 200
    batch = operation.Case(body={"events": [valid_event(), valid_event()]}, media_type="application/json")
    accepted = batch.call_and_validate(base_url=api_url, checks=CHECKS)
    assert accepted.status_code == 200 and accepted.json()["accepted"] == 2
    invalid = operation.Case(body={"events": [valid_event(event_name="Nope")]}, media_type="application/json")
    rejected = invalid.call_and_validate(base_url=api_url, checks=CHECKS)
    assert rejected.status_code == 400 and rejected.json()["violations"][0]["index"] == 0
    assert len(s3_bucket.keys("events/")) == 2 and len(s3_bucket.keys("failed/")) == 1
