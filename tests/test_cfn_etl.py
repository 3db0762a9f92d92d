"""The ETL stack: the function in the private subnet with the seed's environment, its role (the raw bucket
and its one parameter), the schedule, failure destination, alarm and log retention.

Parsed templates (tests/cfn_support.py); what moto does not model is checked here (tests/test_stacks_moto.py
lists the gaps).
"""

from __future__ import annotations

from tests.cfn_support import (
    actions,
    default,
    plain,
    props,
)


def test_etl_function_in_the_private_subnet_with_the_seed_environment() -> None:
    fn = props("etl", "Function")
    assert default("etl", "FunctionName") == "SBW_Lamda_ETL"
    assert fn["Runtime"] == "python3.11"
    assert fn["Handler"] == "sbw_clickstream.etl_handler.handler"
    assert plain(fn["VpcConfig"]) == {
        "SubnetIds": [{"Ref": "PrivateSubnetId"}],
        "SecurityGroupIds": [{"Ref": "SgLambdaEtlId"}],
    }
    env = plain(fn["Environment"]["Variables"])
    assert {k: v for k, v in env.items() if not k.startswith("POWERTOOLS_")} == {
        "DWH_HOST": {"Ref": "DwhHost"},
        "DWH_PORT": {"Ref": "DwhPort"},
        "DWH_USER": {"Ref": "DwhUser"},
        "DWH_PASSWORD_PARAM": {"Ref": "DwhPasswordParameter"},
        "DWH_DATABASE": {"Ref": "DwhDatabase"},
        "RAW_BUCKET": {"Ref": "RawBucketName"},
    }
    assert "DWH_PASSWORD" not in env
    assert default("etl", "DwhPort") == "5432"
    assert default("etl", "DwhUser") == "sbw_etl"
    assert default("etl", "DwhDatabase") == "clickstream_dw"
    assert default("etl", "DwhPasswordParameter") == "/sbw/dwh/etl_password"


def test_etl_role_reads_only_the_raw_bucket_and_its_one_parameter() -> None:
    (policy,) = props("etl", "FunctionRole")["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    by_service: dict[str, set[str]] = {}
    for s in statements.values():
        for action in actions(s):
            by_service.setdefault(action.split(":")[0], set()).add(action)
    assert by_service["s3"] == {"s3:ListBucket", "s3:GetObject"}
    assert by_service["ssm"] == {"ssm:GetParameter"}
    assert by_service["sqs"] == {"sqs:SendMessage"}
    assert by_service["logs"] == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert set(by_service) == {"s3", "ssm", "sqs", "logs", "ec2"}
    # What a VPC function needs to attach to its subnet (AWSLambdaVPCAccessExecutionRole's set), no more.
    assert by_service["ec2"] == {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
    assert plain(statements["ReadRawEvents"]["Resource"]) == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${RawBucketName}/events/*"
    }
    assert plain(statements["ListRawEvents"]["Condition"]) == {"StringLike": {"s3:prefix": ["events/*"]}}
    assert plain(statements["ReadPasswordParameter"]["Resource"]) == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
        ":parameter${DwhPasswordParameter}"
    }
    assert "ManagedPolicyArns" not in props("etl", "FunctionRole")


def test_etl_schedule_failure_destination_alarm_and_log_retention() -> None:
    rule = props("etl", "HourlyRule")
    assert default("etl", "RuleName") == "SBW_ETL_HOURLY_RULE"
    assert default("etl", "ScheduleExpression") == "rate(1 hour)"
    assert plain(rule["Targets"][0]["Arn"]) == {"Fn::GetAtt": ["Function", "Arn"]}
    invoke = props("etl", "FunctionEventInvokeConfig")
    assert plain(invoke["DestinationConfig"]["OnFailure"]["Destination"]) == {
        "Fn::GetAtt": ["FailureQueue", "Arn"]
    }
    alarm = props("etl", "ErrorsAlarm")
    assert alarm["MetricName"] == "Errors" and alarm["Namespace"] == "AWS/Lambda"
    assert props("etl", "FunctionLogGroup")["RetentionInDays"]
