"""The auth and lake stacks: the Cognito public client (optional Amplify) and the lake table's columns =
the stored event contract.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

from sbw_clickstream import contract

from tests.cfn_support import (
    plain,
    props,
    resources,
    template,
)


def test_auth_public_client_and_optional_amplify() -> None:
    client = props("auth", "UserPoolClient")
    assert client["GenerateSecret"] is False
    assert resources("auth")["AmplifyApp"]["Condition"] == "CreateAmplifyApp"
    assert template("auth")["Parameters"]["AmplifyAccessToken"]["NoEcho"] is True


def test_lake_table_columns_are_the_stored_event_contract() -> None:
    table = props("lake", "EventsTable")["TableInput"]
    columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [*contract.EVENT_FIELDS, *contract.ENRICHMENT_FIELDS]
    params = plain(table["Parameters"])
    assert params["projection.enabled"] == "true"
    assert params["projection.dt.format"] == "yyyy/MM/dd"
    assert params["storage.location.template"] == {"Fn::Sub": "s3://${RawBucketName}/events/${!dt}/"}
    assert (
        table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
        == "org.openx.data.jsonserde.JsonSerDe"
    )
    queries = resources("lake", "AWS::Athena::NamedQuery")
    assert len(queries) >= 5
    for q in queries.values():
        assert "FROM clickstream_events" in q["Properties"]["QueryString"]
