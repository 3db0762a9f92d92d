"""SBW_Lamda_ETL configuration: read from the environment once per container, validated.

Every error names the variable. The password comes from `DWH_PASSWORD_PARAM` (an SSM
SecureString, read once per container and cached) or, for local runs, `DWH_PASSWORD`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The parsers are sbw_clickstream.config's, shared with the ingest function (one rule each).
from sbw_clickstream.config import ConfigError
from sbw_clickstream.config import bucket_name as _bucket
from sbw_clickstream.config import choice as _choice
from sbw_clickstream.config import integer as _int
from sbw_clickstream.config import number as _float
from sbw_clickstream.config import optional as _optional
from sbw_clickstream.config import required as _required
from sbw_clickstream.keys import EVENTS_PREFIX

__all__ = ["ConfigError", "EtlConfig", "clear_password_cache", "resolve_password"]


@dataclass(frozen=True)
class EtlConfig:
    """Everything a run needs besides the AWS clients and the database password."""

    dwh_host: str
    dwh_port: int
    dwh_user: str
    dwh_database: str
    raw_bucket: str
    region: str
    password_param: str | None = None
    password: str | None = None
    prefix: str = EVENTS_PREFIX
    lookback_minutes: int = 15
    read_concurrency: int = 64
    list_page_size: int = 1000
    batch_objects: int = 1000
    batch_rows: int = 20_000
    max_object_bytes: int = 8 * 1024 * 1024
    deadline_margin_seconds: float = 20.0
    connect_timeout: int = 10
    sslmode: str = "prefer"
    db_retries: int = 4
    s3_retries: int = 4
    retry_base_seconds: float = 0.5
    # A run-lock holder whose session is older than this is dead (no Lambda lives past 900 s).
    lock_stale_seconds: float = 1000.0

    def __repr__(self) -> str:  # never print the password
        return f"EtlConfig(host={self.dwh_host!r}, db={self.dwh_database!r}, bucket={self.raw_bucket!r})"

    def dsn_kwargs(self, password: str) -> dict[str, Any]:
        """psycopg2.connect keyword arguments."""
        return {
            "host": self.dwh_host,
            "port": self.dwh_port,
            "user": self.dwh_user,
            "dbname": self.dwh_database,
            "password": password,
            "connect_timeout": self.connect_timeout,
            "sslmode": self.sslmode,
            "application_name": "sbw_etl",
            "keepalives": 1,
            "keepalives_idle": 30,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EtlConfig:
        """Build and validate the configuration from environment variables."""
        password_param = _optional(env, "DWH_PASSWORD_PARAM")
        password = env.get("DWH_PASSWORD") or None
        if not password_param and not password:
            raise ConfigError("DWH_PASSWORD_PARAM", "is not set (nor DWH_PASSWORD, for local runs)")
        if password_param and not password_param.startswith("/"):
            raise ConfigError("DWH_PASSWORD_PARAM", f"{password_param!r} is not an SSM parameter name (/...)")
        region = _optional(env, "AWS_REGION") or _optional(env, "AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("AWS_REGION", "is not set")
        return cls(
            dwh_host=_required(env, "DWH_HOST"),
            dwh_port=_int(env, "DWH_PORT", 5432, 1, 65535),
            dwh_user=_required(env, "DWH_USER"),
            dwh_database=_optional(env, "DWH_DATABASE") or "clickstream_dw",
            raw_bucket=_bucket(env),
            region=region,
            password_param=password_param,
            password=password,
            lookback_minutes=_int(env, "ETL_LOOKBACK_MINUTES", 15, 0, 7 * 24 * 60),
            read_concurrency=_int(env, "ETL_READ_CONCURRENCY", 64, 1, 256),
            list_page_size=_int(env, "ETL_LIST_PAGE_SIZE", 1000, 1, 1000),
            batch_objects=_int(env, "ETL_BATCH_OBJECTS", 1000, 1, 100_000),
            batch_rows=_int(env, "ETL_BATCH_ROWS", 20_000, 1, 10_000_000),
            max_object_bytes=_int(env, "ETL_MAX_OBJECT_BYTES", 8 * 1024 * 1024, 1, 1024**3),
            deadline_margin_seconds=_float(env, "ETL_DEADLINE_MARGIN_SECONDS", 20.0, 0.0, 600.0),
            connect_timeout=_int(env, "DWH_CONNECT_TIMEOUT", 10, 1, 300),
            sslmode=_choice(env, "DWH_SSLMODE", "prefer", _SSLMODES),
            db_retries=_int(env, "ETL_DB_RETRIES", 4, 0, 20),
            s3_retries=_int(env, "ETL_S3_RETRIES", 4, 0, 20),
            retry_base_seconds=_float(env, "ETL_RETRY_BASE_SECONDS", 0.5, 0.0, 60.0),
            lock_stale_seconds=_float(env, "ETL_LOCK_STALE_SECONDS", 1000.0, 1.0, 86_400.0),
        )


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

_password_cache: dict[str, str] = {}
_password_lock = threading.Lock()


def resolve_password(config: EtlConfig, ssm_client_factory: Any) -> str:
    """The database password: DWH_PASSWORD, or the SSM SecureString (fetched once per container).

    `ssm_client_factory` is called (no arguments) only when the parameter is not cached yet.
    """
    if config.password_param is None:
        assert config.password is not None
        return config.password
    with _password_lock:
        cached = _password_cache.get(config.password_param)
        if cached is not None:
            return cached
        try:
            response = ssm_client_factory().get_parameter(Name=config.password_param, WithDecryption=True)
        except Exception as exc:
            raise ConfigError(
                "DWH_PASSWORD_PARAM", f"cannot read SSM parameter {config.password_param!r}: {exc}"
            ) from exc
        value = response["Parameter"]["Value"]
        _password_cache[config.password_param] = value
        return value


def clear_password_cache() -> None:
    """Forget cached passwords (tests; a rotated password after an authentication failure)."""
    with _password_lock:
        _password_cache.clear()
