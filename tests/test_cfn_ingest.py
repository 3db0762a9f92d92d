"""The ingest stack: the function's role equals the policy file, the HTTP API from the OpenAPI document,
no GetAtt of resources moto does not model in the outputs.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

import json
import re

import yaml

from tests.cfn_support import (
    REPO,
    STACKS,
    actions,
    default,
    plain,
    props,
    resolve_sub,
    resources,
    template,
)


def test_ingest_role_is_exactly_the_policy_file() -> None:
    policy_file = json.loads((REPO / "lambda_src/sbw_clickstream/iam/ingest-policy.json").read_text())
    (policy,) = props("ingest", "FunctionRole")["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    rendered = []
    for s in statements:
        resource = s["Resource"]
        resource = [resolve_sub(r) for r in resource] if isinstance(resource, list) else resolve_sub(resource)
        action = s["Action"] if isinstance(s["Action"], str) else list(s["Action"])
        rendered.append({"Sid": s["Sid"], "Effect": s["Effect"], "Action": action, "Resource": resource})
    assert rendered == policy_file["Statement"]
    # And what it means: S3 is PutObject only, on events/ and failed/ of the raw bucket.
    s3 = [a for s in statements for a in actions(s) if a.startswith("s3:")]
    assert s3 == ["s3:PutObject"]
    assert {a.split(":")[0] for s in statements for a in actions(s)} == {"s3", "logs"}
    assert "ManagedPolicyArns" not in props("ingest", "FunctionRole")


def test_ingest_function_http_api_from_the_openapi_document() -> None:
    fn = props("ingest", "Function")
    assert default("ingest", "FunctionName") == "clickstream-lambda-ingest"
    assert default("ingest", "ApiName") == "clickstream-http-api"
    assert fn["Runtime"] == "python3.11"
    assert fn["Handler"] == "sbw_clickstream.ingest_handler.handler"
    assert "VpcConfig" not in fn
    assert set(fn["Environment"]["Variables"]) >= {"RAW_BUCKET", "CORS_ALLOW_ORIGINS"}
    api = props("ingest", "HttpApi")
    assert plain(api["BodyS3Location"]) == {
        "Bucket": {"Ref": "ArtifactsBucketName"},
        "Key": {"Ref": "OpenApiKey"},
    }
    stage = props("ingest", "DefaultStage")
    assert stage["AutoDeploy"] is True and stage["StageName"] == "$default"
    assert set(stage["DefaultRouteSettings"]) >= {"ThrottlingRateLimit", "ThrottlingBurstLimit"}
    assert plain(stage["AccessLogSettings"]["DestinationArn"]) == {"Fn::GetAtt": ["AccessLogGroup", "Arn"]}
    permission = props("ingest", "InvokePermission")
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert plain(permission["SourceArn"])["Fn::Sub"].endswith(":${HttpApi}/*/*/clickstream")
    # The OpenAPI document carries the one placeholder stacks.yml substitutes.
    document = (REPO / "lambda_src/sbw_clickstream/openapi/clickstream-http-api.yaml").read_text()
    assert "${IngestFunctionArn}" in document
    assert re.findall(r"\$\{(\w+)\}", document) == ["IngestFunctionArn"] * document.count("${")
    spec = yaml.safe_load(document)
    assert spec["info"]["title"] == "clickstream-http-api"
    assert "post" in spec["paths"]["/clickstream"]


def test_no_getatt_of_unmodelled_resources_in_outputs() -> None:
    """moto skips ApiGatewayV2/Cognito/Glue/Athena/Amplify; a GetAtt of one in Outputs breaks the stack."""
    unmodelled = ("AWS::ApiGatewayV2::", "AWS::Cognito::", "AWS::Glue::", "AWS::Athena::", "AWS::Amplify::")
    for name in STACKS:
        skipped = {k for k, v in resources(name).items() if v["Type"].startswith(unmodelled)}
        for output in template(name)["Outputs"].values():
            value = plain(output["Value"])
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                assert value["Fn::GetAtt"][0] not in skipped, (name, value)
