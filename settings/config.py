"""Settings fields, per-profile defaults and start-up validation."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "staging", "production"]

# Values that differ per profile (DESIGN.md); anything not listed uses the field default.
PROFILES: dict[str, dict[str, Any]] = {
    "development": {
        "cache_size": 500,
        "alert_response_time_ms": 500.0,
        "alert_memory_mb": 300.0,
        "cost_per_db_query": 0.0001,
    },
    "staging": {
        "cache_size": 1000,
        "alert_response_time_ms": 300.0,
        "alert_memory_mb": 500.0,
        "cost_per_db_query": 0.00015,
    },
    "production": {
        "cache_size": 2000,
        "alert_response_time_ms": 200.0,
        "alert_memory_mb": 1000.0,
        "cost_per_db_query": 0.0002,
    },
}

_DATABASE_SCHEMES = (
    "sqlite://",
    "sqlite+aiosqlite://",
    "postgresql://",
    "postgresql+asyncpg://",
    "postgres://",
)


class SettingsError(Exception):
    """A setting is invalid; the message names the environment variable."""


class Settings(BaseSettings):
    """Configuration, read from environment variables of the same (upper-case) name."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Environment = "development"
    debug: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Worker processes that `python app.py` starts on HOST:PORT; above 1 needs Redis.
    workers: int = Field(1, ge=1)

    database_url: str = "sqlite+aiosqlite:///./gradepulse.db"
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_busy_timeout_ms: int = Field(5000, ge=0)
    redis_url: str | None = None
    # Every Redis key and channel starts with it: clusters (and test runs) sharing one
    # Redis never see each other's data (pub/sub channels ignore database numbers).
    redis_prefix: str = Field("gradepulse:", min_length=1)

    cache_size: int = Field(500, ge=0)
    cache_ttl_seconds: float = Field(300.0, gt=0)

    sample_interval_ms: int = Field(1000, ge=10)
    monitoring_enabled: bool = True
    access_log: bool = True
    alert_response_time_ms: float = Field(500.0, ge=0)
    alert_memory_mb: float = Field(300.0, ge=0)
    alert_cost_per_hour: float = Field(1.0, ge=0)
    # high_cost's window: judged once the cost meter has seen this much (at most
    # the hour the meter keeps).
    alert_cost_window_s: float = Field(600.0, gt=0, le=3600)
    alert_cooldown_seconds: float = Field(300.0, ge=0)
    alert_rules: str | None = None
    alert_log_path: str = "alert.log"
    costs_csv_path: str = "costs.csv"
    cost_per_db_query: float = Field(0.0001, ge=0)
    cost_per_100_requests: float = Field(0.001, ge=0)
    cost_summary_interval_s: float = Field(3600.0, gt=0)

    max_batch_size: int = Field(5000, ge=1)
    import_chunk_size: int = Field(1000, ge=1)
    max_subscriptions_per_connection: int = Field(20, ge=1)
    max_subscriptions: int = Field(10_000, ge=1)
    max_subscriptions_per_identity: int = Field(100, ge=1)
    at_risk_average: float = 65.0
    at_risk_trend: float = -2.0
    graphiql_enabled: bool | None = None

    # Authentication (issue 5). AUTH_REQUIRED defaults to false only in development,
    # and then anonymous callers act as admin only from loopback addresses.
    auth_required: bool | None = None
    trusted_hosts: str = "127.0.0.1,localhost"
    jwt_secret: SecretStr | None = None
    jwt_audience: str | None = None
    # How long a verified API key is trusted before it is looked up again: a revoked
    # key stops working within this many seconds.
    api_key_cache_ttl_s: float = Field(5.0, ge=0)

    # Query limits: refused before any resolver runs.
    max_depth: int = Field(10, ge=1)
    max_aliases: int = Field(15, ge=0)
    max_tokens: int = Field(2000, ge=1)
    max_directives: int = Field(50, ge=0)
    max_document_chars: int = Field(15_000, ge=1)
    max_nesting: int = Field(100, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1)
    max_upload_bytes: int = Field(64 * 1_048_576, ge=1)
    max_cost: int = Field(5000, ge=1)
    operation_timeout_s: float = Field(5.0, gt=0)
    # A request (headers and body) must arrive within this (server/slowclients.py).
    http_request_timeout_s: float = Field(30.0, gt=0)
    # A WebSocket whose client has taken nothing for this long is dropped (same file).
    ws_send_timeout_s: float = Field(30.0, gt=0)
    batching_enabled: bool = False
    max_batch_operations: int = Field(10, ge=1)
    # Queries the planner covers run on compiled plans (server/plan.py); false runs
    # every operation through graphql-core's general executor.
    query_plans: bool = True
    # The garbage collector's thresholds once serving (gc.set_threshold): a young
    # generation large enough that a request's or a tick's objects die young, so
    # that full collections (hundreds of ms with thousands of connections) stay rare.
    gc_threshold: str = "50000,10,100"

    # Rate limits: cost points per minute per identity.
    rate_limit_student: int = Field(10_000, ge=1)
    rate_limit_teacher: int = Field(50_000, ge=1)
    rate_limit_admin: int = Field(200_000, ge=1)

    # Persisted operations (server/persisted.py): off, audit (documents outside the
    # manifest run, and are counted and logged with their hash) or require (only
    # the manifest's documents run). The manifest maps sha256 hex to a document, as
    # Relay and GraphQL Codegen write it; the dashboard's own are always in it.
    persisted_operations: Literal["off", "audit", "require"] | None = None
    persisted_operations_manifest: str | None = None
    persisted_operations_admin_bypass: bool = False
    # Automatic persisted queries: how many characters of documents a worker keeps
    # (without Redis, and beside it), and how long Redis keeps one after it was
    # last registered.
    persisted_queries_max_chars: int = Field(16 * 1_048_576, ge=1)
    persisted_queries_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    # Hardening.
    introspection_enabled: bool | None = None
    cors_origins: str = ""
    metrics_token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        env = str(data.get("environment") or "development").strip().lower()
        data = dict(data)
        data["environment"] = env
        for name, value in PROFILES.get(env, {}).items():
            data.setdefault(name, value)
        return data

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(_DATABASE_SCHEMES) or "://" not in value:
            raise ValueError(
                "must start with sqlite:///, sqlite+aiosqlite:///, postgresql:// "
                "or postgresql+asyncpg://"
            )
        if value.startswith("sqlite") and not value.split("://", 1)[1].startswith("/"):
            raise ValueError("a SQLite URL needs three slashes: sqlite:///path")
        return value

    @field_validator("gc_threshold")
    @classmethod
    def _check_gc_threshold(cls, value: str) -> str:
        parts = value.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError("must be three whole numbers, e.g. 50000,10,100")
        if int(parts[0]) < 1:
            raise ValueError("the first threshold must be at least 1")
        return value

    @property
    def gc_thresholds(self) -> tuple[int, int, int]:
        first, second, third = (int(p) for p in self.gc_threshold.split(","))
        return first, second, third

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("trusted_hosts", "cors_origins")
    @classmethod
    def _no_wildcard(cls, value: str) -> str:
        # Every profile: with `*`, any web page (CORS) or a rebound DNS name (Host)
        # reaches the API, and in development the anonymous loopback admin.
        if "*" in _split(value):
            raise ValueError("`*` allows everyone: list the hosts or origins")
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _host_patterns(cls, value: str) -> str:
        # Starlette's check would fail on every request (a 500) for any other use
        # of `*`.
        for pattern in _split(value):
            if "*" in pattern and (not pattern.startswith("*.") or "*" in pattern[1:]):
                raise ValueError(
                    f"{pattern!r}: a host, or `*.` and a domain (*.example.org)"
                )
        return value

    @field_validator("persisted_operations", mode="before")
    @classmethod
    def _persisted_mode(cls, value: Any) -> Any:
        return value.strip().lower() or None if isinstance(value, str) else value

    @field_validator("persisted_operations_manifest", mode="before")
    @classmethod
    def _blank_manifest_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def persisted_operations_mode(self) -> str:
        """PERSISTED_OPERATIONS, else off in development and audit elsewhere."""
        if self.persisted_operations is not None:
            return self.persisted_operations
        return "off" if self.environment == "development" else "audit"

    @field_validator("jwt_audience", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("jwt_secret", "metrics_token", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment == "production" and self.debug:
            raise ValueError("DEBUG must be off in production")
        if self.environment != "development" and self.auth_required is False:
            raise ValueError(f"AUTH_REQUIRED may not be false in {self.environment}")
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if secret and len(secret) < 32 and self.environment != "development":
            raise ValueError("JWT_SECRET must be at least 32 characters")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                f"WORKERS above 1 ({self.workers}) needs REDIS_URL: workers share "
                "budgets, feeds and caches through Redis (set REDIS_URL, or WORKERS=1)"
            )
        for role in ("student", "teacher", "admin"):
            if getattr(self, f"rate_limit_{role}") < self.max_cost:
                raise ValueError(
                    f"RATE_LIMIT_{role.upper()} must be at least MAX_COST "
                    f"({self.max_cost}), or the costliest query could never run"
                )
        return self

    @property
    def graphiql(self) -> bool:
        """GraphiQL is served outside production unless switched explicitly."""
        if self.graphiql_enabled is not None:
            return self.graphiql_enabled
        return self.environment != "production"

    @property
    def requires_auth(self) -> bool:
        """Credentials are required outside development unless switched explicitly."""
        if self.auth_required is not None:
            return self.auth_required
        return self.environment != "development"

    @property
    def introspection(self) -> bool:
        if self.introspection_enabled is not None:
            return self.introspection_enabled
        return self.environment != "production"

    @property
    def trusted_host_list(self) -> list[str]:
        return _split(self.trusted_hosts)

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one line per bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
        variable = loc[0].upper() if loc else "settings"
        message = error.get("msg", "invalid value").removeprefix("Value error, ")
        if not loc and (named := re.match(r"([A-Z][A-Z0-9_]+) ", message)):
            variable = named.group(1)
        parts.append(f"{variable}: {message}")
    return "invalid settings: " + "; ".join(parts)
