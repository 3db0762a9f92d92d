"""sbw_clickstream.config: the one set of environment parsers both Lambda functions use.

Both functions must accept and refuse exactly the same bucket names and integers, with errors that
start with the variable's name.
"""

from __future__ import annotations

import pytest
from sbw_clickstream import config
from sbw_clickstream.config import ConfigError
from sbw_clickstream.etl_config import EtlConfig
from sbw_clickstream.ingest_config import load_config

INGEST_ENV = {"RAW_BUCKET": "clickstream-s3-ingest", "AWS_REGION": "ap-southeast-1"}
ETL_ENV = {
    **INGEST_ENV,
    "DWH_HOST": "10.0.128.10",
    "DWH_USER": "sbw_etl",
    "DWH_PASSWORD_PARAM": "/sbw/dwh/etl_password",
}
GOOD_BUCKETS = ["clickstream-s3-ingest", "abc", "a.b-c", "bucket-123456789012-ap-southeast-1", "a" * 63]
BAD_BUCKETS = [
    "ab",  # too short
    "a" * 64,  # too long
    "Clickstream",  # upper case
    "click_stream",  # underscore
    "-bucket",  # starts with a hyphen
    "bucket-",  # ends with a hyphen
    "a..b",  # adjacent dots
    "192.168.1.10",  # an IPv4 address
    "xn--bucket",  # reserved prefix
    "bucket-s3alias",  # reserved suffix
    "bucket--ol-s3",  # reserved suffix
]


@pytest.mark.parametrize("name", GOOD_BUCKETS)
def test_both_functions_accept_valid_bucket_names(name: str) -> None:
    assert load_config({**INGEST_ENV, "RAW_BUCKET": name}).raw_bucket == name
    assert EtlConfig.from_env({**ETL_ENV, "RAW_BUCKET": name}).raw_bucket == name


@pytest.mark.parametrize("name", BAD_BUCKETS)
def test_both_functions_refuse_the_same_bucket_names(name: str) -> None:
    for load, env in ((load_config, INGEST_ENV), (EtlConfig.from_env, ETL_ENV)):
        with pytest.raises(ConfigError) as info:
            load({**env, "RAW_BUCKET": name})
        assert info.value.variable == "RAW_BUCKET"
        assert str(info.value).startswith("RAW_BUCKET: ")
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("12x", "'12x' is not an integer (expected 1..10)"), ("11", "11 is outside 1..10"), ("0", "outside")],
)
def test_integer_errors_name_the_variable_and_the_range(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^N: ") as info:
        config.integer({"N": raw}, "N", 5, 1, 10)
    assert message in str(info.value)


def test_integer_default_and_blanks() -> None:
    assert config.integer({}, "N", 5, 1, 10) == 5
    assert config.integer({"N": "  "}, "N", 5, 1, 10) == 5
    assert config.integer({"N": " 7 "}, "N", 5, 1, 10) == 7


def test_same_integer_rule_in_both_functions() -> None:
    for load, env, name in (
        (load_config, INGEST_ENV, "MAX_EVENTS_PER_REQUEST"),
        (EtlConfig.from_env, ETL_ENV, "ETL_READ_CONCURRENCY"),
    ):
        with pytest.raises(ConfigError, match=rf"^{name}: 'lots' is not an integer \(expected 1\.\.\d+\)$"):
            load({**env, name: "lots"})


def test_required_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match=r"^RAW_BUCKET: is not set \(expected an S3 bucket name"):
        load_config({"AWS_REGION": "ap-southeast-1"})
