"""Settings, read from SCORER_* environment variables and a .env file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "SCORER_"
SIMULATOR_BASE_URL = "http://127.0.0.1:8900"


class Settings(BaseSettings):
    """Every setting of the service; .env.example lists them all, with their defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    database_url: str = "sqlite+aiosqlite:///./scorer.db"
    database_pool_size: int = Field(default=10, ge=1)
    redis_url: str | None = None

    llm_provider: Literal["openai", "simulated"] = "openai"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SCORER_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_concurrency: int = Field(default=256, ge=1)
    llm_max_retries: int = Field(default=3, ge=0)
    scoring_deadline_s: float = Field(default=120.0, gt=0)
    scoring_samples: int = Field(default=1, ge=1, le=9)

    portfolio_analyzer_url: str | None = None
    portfolio_analyzer_token: SecretStr | None = None
    portfolio_timeout_s: float = Field(default=10.0, gt=0)
    portfolio_weight: float = Field(default=0.2, ge=0, le=1)

    threshold_strong_hire: float = Field(default=85.0, ge=0, le=100)
    threshold_hire: float = Field(default=65.0, ge=0, le=100)
    threshold_no_hire: float = Field(default=40.0, ge=0, le=100)

    # aiohttp in production: httpx's own pool collapses under fan-out (500 concurrent calls
    # to a 0.5 s server took 5.9 s through it, 0.65 s through aiohttp); httpx where respx
    # must intercept.
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    http_max_connections: int = Field(default=2000, ge=1)

    email_backend: Literal["file", "console", "smtp"] = "file"
    email_dir: Path = Path("./outbox")
    email_from: str = "Interview Scorer <no-reply@interview-scorer.local>"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_timeout_s: float = Field(default=30.0, gt=0)

    cache_ttl_s: int = Field(default=86400, ge=0)
    # The in-process cache (no SCORER_REDIS_URL) keeps at most this much, least recently used
    # first out (its results and cached reads, in each API process).
    cache_memory_mb: int = Field(default=64, ge=1, le=65_536)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    # Field bounds (turns, characters, criteria, recruiters) are fixed in the request schema
    # so that the OpenAPI document states them; only the body size is a setting.
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    review_spread: int = Field(default=1, ge=0, le=4)

    # Caching and idempotency: how long an Idempotency-Key is remembered, and how long a Redis
    # call may take before the cache counts as down.
    idempotency_ttl_s: int = Field(default=86400, ge=1)
    redis_timeout_s: float = Field(default=1.0, gt=0)
    # API processes of `serve` (uvicorn workers; --workers wins): without Redis, several
    # cannot share cached reads.
    workers: int = Field(default=1, ge=1)

    # --- The request path (service/writer.py, service/auth) and the worker (service/worker.py).
    # A group of writes closes this long after its first write, or at this many rows.
    write_group_delay_s: float = Field(default=0.002, ge=0, le=1)
    write_group_max_rows: int = Field(default=300, ge=1, le=10_000)
    # A verified API key is trusted for this long in each process (0: checked every request);
    # a revocation reaches every process at once over Redis where SCORER_REDIS_URL is set.
    api_key_cache_s: float = Field(default=5.0, ge=0, le=300)
    # How often the worker asks the database whether work is due. New work wakes it at once
    # (PostgreSQL's NOTIFY, a datagram on SQLite: service/wakeup.py); the poll is for retries
    # whose time has come, leases of dead workers, and a lost wake-up.
    worker_poll_s: float = Field(default=1.0, gt=0, le=60)
    # Allocations between young-generation garbage collections in the API and worker processes
    # (service/runtime.py; 0 keeps Python's default of 700, which costs a quarter of the CPU).
    gc_gen0_threshold: int = Field(default=10_000, ge=0)
    # How much lower the CPU priority of the worker `serve` starts is than the API's (nice(2);
    # 0: the same): under full load the answers go first and the mail catches up after.
    worker_niceness: int = Field(default=10, ge=0, le=19)
    # Touched by the worker while it can reach its database (at most once a second), for a
    # container's health check: `interview-scorer worker --check` (unset: no file).
    worker_heartbeat_file: Path | None = None

    # --- Asynchronous evaluations, batches and webhooks (service/jobs, batches, webhooks). ---
    # Background scorings in flight per process (never more than SCORER_LLM_MAX_CONCURRENCY).
    job_concurrency: int = Field(default=16, ge=1)
    # A worker's lease on a pending evaluation, renewed while it scores; a crashed worker's
    # evaluations are picked up by another once the lease has expired.
    job_lease_s: float = Field(default=60.0, gt=0)
    job_poll_interval_s: float = Field(default=5.0, gt=0)
    max_batch_items: int = Field(default=500, ge=1, le=10_000)
    max_batch_body_bytes: int = Field(default=64_000_000, ge=1024, le=1_000_000_000)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_base_s: float = Field(default=10.0, gt=0)
    webhook_backoff_cap_s: float = Field(default=3600.0, gt=0)
    # Callbacks to loopback, private, link-local or reserved addresses are refused (SSRF)
    # unless this is true.
    webhook_allow_private: bool = False
    # A background evaluation claimed this many times without finishing (its worker died, or
    # the job kept failing) is failed with the last reason rather than claimed again.
    job_max_attempts: int = Field(default=5, ge=1, le=100)

    # --- Access (docs/security.md): per-key limits, off (0) by default, kept per process. ---
    # Requests a second per API key, with bursts of up to SCORER_RATE_LIMIT_BURST.
    rate_limit_per_s: float = Field(default=0.0, ge=0, le=1_000_000)
    rate_limit_burst: int = Field(default=20, ge=1, le=1_000_000)
    # Requests in flight at once per API key.
    max_in_flight_per_key: int = Field(default=0, ge=0, le=1_000_000)
    # How often each process reads the erasures other processes made, and forgets its cached
    # copies of them: the bound on how long an erased evaluation can be served from a cache.
    erasure_poll_s: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _split_origins(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("cors_origins"), str):
            raw = data["cors_origins"]
            data = {**data, "cors_origins": [o.strip() for o in raw.split(",") if o.strip()]}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.llm_provider == "openai" and self.llm_api_key is None:
            raise ValueError(
                "SCORER_LLM_API_KEY (or OPENAI_API_KEY) is required unless "
                "SCORER_LLM_PROVIDER=simulated"
            )
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "SCORER_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        if not self.threshold_no_hire <= self.threshold_hire <= self.threshold_strong_hire:
            raise ValueError(
                "SCORER_THRESHOLD_NO_HIRE <= SCORER_THRESHOLD_HIRE <= "
                "SCORER_THRESHOLD_STRONG_HIRE must hold"
            )
        return self

    @cached_property
    def effective_llm_base_url(self) -> str:
        """The LLM base URL, defaulting to the local simulator when simulated."""
        if self.llm_base_url:
            return self.llm_base_url
        if self.llm_provider == "simulated":
            return f"{SIMULATOR_BASE_URL}/v1"
        return "https://api.openai.com/v1"

    @property
    def reported_model(self) -> str:
        """The model name shown in evaluations: simulated runs say so."""
        return "simulated" if self.llm_provider == "simulated" else self.llm_model

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.database_url.startswith("sqlite")

    # --- Emails (service/notifications): the outbox's delivery, retries and sweeper. ---
    email_max_attempts: int = Field(default=8, ge=1, le=100)
    # A claimed mail not marked sent within the lease is claimed again by a sweeper; each
    # send is cut off at half the lease so that the lease outlives it.
    email_lease_s: float = Field(default=120.0, gt=0)
    email_sweeper: bool = True
    email_sweep_interval_s: float = Field(default=10.0, gt=0)
    email_sweep_batch: int = Field(default=200, ge=1, le=1000)
    email_backoff_base_s: float = Field(default=30.0, gt=0)
    email_backoff_cap_s: float = Field(default=3600.0, gt=0)
    email_shutdown_grace_s: float = Field(default=10.0, ge=0)
    # A CA bundle to verify the SMTP server with (a private CA); the system's otherwise.
    smtp_ca_file: Path | None = None

    @model_validator(mode="after")
    def _check_email(self) -> Settings:
        if self.email_lease_s / 2 <= self.smtp_timeout_s and self.email_backend == "smtp":
            raise ValueError(
                "SCORER_EMAIL_LEASE_S must be more than twice SCORER_SMTP_TIMEOUT_S, "
                "or a slow send could be claimed and sent again"
            )
        return self


class SettingsError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        msg = err["msg"].removeprefix("Value error, ")
        if loc:
            raise SettingsError(f"{ENV_PREFIX}{loc[0].upper()}: {msg}") from None
        raise SettingsError(msg) from None


class DatabaseSettings(BaseSettings):
    """Only the database URL: what migrations and key management need, without an LLM key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str = Settings.model_fields["database_url"].default
    # Where `api-keys revoke` announces a revocation to the running processes.
    redis_url: str | None = None
