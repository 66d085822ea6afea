"""Settings: every knob comes from the environment, typed and validated once at start.

A process that starts with a wrong value must stop at once with one line that names the
variable, rather than fail later on the first request or task that touches it.
The four variables every deployment sets keep their conventional names (`DATABASE_URL`,
`REDIS_URL`, `ADMIN_TOKEN`, `PORT`); the rest are prefixed `KOALA_`.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingest import redis_clients
from ingest.breaker import BreakerPolicy
from ingest.companies import ascii_domain
from ingest.signals import DEFAULT_SIGNAL_RULES, parse_rules

MAX_KEY_ROTATION_GRACE_SECONDS = 30 * 86400

DEFAULT_BLOCKED_IDENTIFIERS = (
    "",
    "null",
    "none",
    "nil",
    "undefined",
    "anonymous",
    "unknown",
    "0",
    "-1",
    "nan",
    "true",
    "false",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
    "<nil>",
    "guest",
    "test",
)


class Settings(BaseSettings):
    """Configuration of every koala-ingest process (receiver, worker, beat, CLI)."""

    model_config = SettingsConfigDict(env_prefix="KOALA_", case_sensitive=False, extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="PostgreSQL URL; unset means `up` and the tests start embedded servers.",
    )
    migrate_database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for `koala-ingest migrate` only (unset: DATABASE_URL). Point it"
        " past a transaction-pooling PgBouncer: migrate holds a session advisory lock.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL"),
        description="Redis URL (broker and receiver queue); unset means embedded. One server"
        " (redis://, rediss://, unix://) or a Sentinel set and its master"
        " (redis+sentinel://host:26379,host:26379,host:26379/MASTER[/DB]).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ADMIN_TOKEN"),
        description="Bearer token of the admin API; unset disables the admin API.",
    )
    port: int = Field(default=8000, ge=1, le=65535, validation_alias=AliasChoices("PORT"))
    host: str = Field(default="0.0.0.0", description="Address the receiver binds.")
    web_drain_seconds: int = Field(
        default=20,
        ge=0,
        le=3600,
        description="On SIGTERM the receiver lets requests in progress finish for at most this"
        " long (uvicorn's timeout_graceful_shutdown), then cancels them and exits.",
    )

    redis_key_prefix: str = Field(
        default="koala:",
        description="Prefix of every Redis key we and kombu write, so one Redis can host several"
        " deployments or test runs.",
    )
    redis_replica_acks: int = Field(
        default=0,
        ge=0,
        description="Answer 200 only once this many Redis replicas have the calls (WAIT after"
        " each flush); fewer within the timeout answers 503 + Retry-After (the calls are"
        " queued already: the sender's retry is a duplicate that dedup absorbs). 0: off.",
    )
    redis_replica_acks_timeout_ms: int = Field(
        default=1000,
        ge=1,
        le=60_000,
        description="How long a flush waits for KOALA_REDIS_REPLICA_ACKS replicas.",
    )
    queue_name: str = Field(default="ingest", min_length=1, description="Celery queue of calls.")
    queue_max_depth: int = Field(
        default=200_000,
        ge=1,
        description="Queued messages above which the receiver answers 429 (backpressure).",
    )
    project_rate_limit: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="Calls per second a project may send (all receivers together); over it"
        " its requests are answered 429 + Retry-After and not counted received (the sender"
        " retries). 0: no limit. A project's own limit (`projects set-limits`) overrides it.",
    )
    project_queue_limit: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Calls of one project waiting for the workers (received, not yet"
        " committed) above which its requests are answered 429 + Retry-After until the"
        " workers catch up. 0: no limit. A project's own limit overrides it.",
    )
    visibility_timeout: int = Field(
        default=60,
        ge=5,
        description="Seconds a message held by a worker that stopped heartbeating waits before"
        " kombu redelivers it (a live worker refreshes what it holds every"
        " KOALA_HEARTBEAT_SECONDS, so a slow batch is never taken from it); the same in every"
        " process sharing the broker.",
    )
    heartbeat_seconds: int = Field(
        default=5,
        ge=1,
        description="How often a worker marks the messages it holds as alive (kombu's unacked"
        " index and the ledger): a holder silent for KOALA_LOST_AFTER_SECONDS is dead.",
    )

    max_call_bytes: int = Field(default=32 * 1024, ge=1024)
    max_request_bytes: int = Field(default=500 * 1024, ge=1024)
    max_batch_calls: int = Field(default=2500, ge=1)
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request line and headers (431 over it); httptools has no limit.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request's line and headers must arrive within this time (408).",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A request's body must arrive within this time of its headers (408).",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, le=3600, description="An idle keep-alive connection is closed after it."
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        description="Open connections (and requests in progress) above which new requests are"
        " answered 503 (uvicorn's limit_concurrency).",
    )
    backlog: int = Field(
        default=2048, ge=1, description="Connections waiting to be accepted (listen backlog)."
    )
    key_cache_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A new or revoked project key takes effect in the receiver within this time.",
    )
    key_rotation_grace_seconds: int = Field(
        default=86400,
        ge=0,
        le=MAX_KEY_ROTATION_GRACE_SECONDS,
        description="After `projects rotate-key`, the previous key is still taken this long"
        " (unless the rotation gives its own); 0 retires it at once. At most 30 days.",
    )

    lost_after_seconds: int = Field(
        default=20,
        ge=1,
        description="A queued batch silent this long (not committed, not heartbeated by a live"
        " worker, and no longer in the queue) was lost by a killed worker and is queued again"
        " by the sweep, which runs as often.",
    )
    dedup_window_days: int = Field(default=7, ge=1)
    retry_max_attempts: int = Field(
        default=12,
        ge=0,
        description="Retries of a batch failing transiently before its calls are"
        " dead-lettered (while PostgreSQL is unreachable, retries go on).",
    )
    retry_max_age_seconds: int = Field(default=6 * 3600, ge=60)
    retry_backoff_max_seconds: int = Field(default=300, ge=1)
    statement_timeout_ms: int = Field(
        default=60_000,
        ge=1,
        description="A batch statement running longer is cancelled and the batch retried"
        " (a stuck lock must not hold a worker forever).",
    )
    breaker_threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of recent calls dead-lettered that opens the circuit breaker.",
    )
    breaker_min_calls: int = Field(default=200, ge=1)
    breaker_window_seconds: int = Field(default=60, ge=10)
    breaker_cooldown_seconds: int = Field(default=120, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    worker_batch_max_calls: int = Field(default=1000, ge=1)
    db_pool_max_size: int = Field(default=4, ge=1)
    db_prepared_statements: bool = Field(
        default=True,
        description="Let psycopg prepare repeated queries server-side (after 5 runs). Turn"
        " off behind a transaction-pooling PgBouncer older than 1.22.1, which cannot carry"
        " prepared statements from one server connection to another.",
    )

    blocked_identifiers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_BLOCKED_IDENTIFIERS,
        description="Comma-separated values that never identify anyone (case-insensitive).",
    )
    reprocess_batch_size: int = Field(
        default=1000, ge=1, le=50_000, description="Events per reprocessing transaction."
    )
    job_slice_seconds: float = Field(
        default=30,
        gt=0,
        le=600,
        description="A worker runs a long job this long, then hands the rest to a"
        " continuation task (the queue stays fair and no task outlives the visibility timeout).",
    )
    schedule_auto_replay_seconds: int = Field(
        default=900, ge=0, description="Beat: replay transient dead letters every N s (0: off)."
    )
    schedule_expire_seconds: int = Field(
        default=3600, ge=0, description="Beat: expire dedup keys and old data every N s (0: off)."
    )
    schedule_identity_check_seconds: int = Field(
        default=86_400, ge=0, description="Beat: the identity check every N s (0: off)."
    )
    schedule_reprocess_seconds: int = Field(
        default=0,
        ge=0,
        description="Beat: reprocess every project's recent history every N s (0: off).",
    )
    reprocess_window_hours: int = Field(
        default=24, ge=1, description="What the scheduled reprocessing covers: the last N hours."
    )
    auto_replay_budget: int = Field(
        default=10_000, ge=1, description="Dead letters one automatic replay run sends at most."
    )
    auto_replay_max_age_hours: int = Field(
        default=72, ge=1, description="Older transient dead letters are left to an operator."
    )
    auto_replay_max_replays: int = Field(
        default=5, ge=1, description="A letter replayed this often is left to an operator."
    )
    replay_stuck_seconds: int = Field(
        default=3600,
        ge=60,
        description="A dead letter still `replaying` this long after its replay was sent is"
        " `pending` again (the hourly expire job): its replay message was lost.",
    )
    retention_days: int = Field(
        default=0,
        ge=0,
        description="Delete events, refusals, resolved dead letters, merge records and job"
        " runs older than this (0: keep everything). Pending dead letters are kept.",
    )
    suppress_days: int = Field(
        default=30,
        ge=0,
        description="After a deletion, later calls naming the deleted user's identifiers are"
        " refused as `suppressed` for this many days (0: no suppression).",
    )
    email_strip_plus_tags: bool = Field(
        default=False,
        description="Normalization rule: `ann+news@acme.com` is the visitor `ann@acme.com`."
        " Applies to new calls; `koala-ingest reprocess` applies it to history.",
    )
    company_extra_free_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Companies from work emails: comma-separated email domains that stand for"
        " no company, besides the free-mail and disposable lists the packages ship"
        " (`example.org`; its subdomains too).",
    )
    company_work_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Companies from work emails: comma-separated email domains that always"
        " stand for a company, even when a free-mail or disposable list names them.",
    )
    signal_rules: str = Field(
        default=DEFAULT_SIGNAL_RULES,
        description="Company activity: intent signals counted per company and day, rules"
        " separated by `;`: `name=path:GLOB` (a page path, `*` any characters) or"
        " `name=event:NAME` (a track call's exact event name). Empty: no signals."
        " Applies to new calls; `koala-ingest reprocess` applies it to history.",
    )
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="text", pattern=r"^(text|json)$")
    data_dir: str = Field(
        default=".koala-ingest",
        description="Where `up` keeps the embedded servers' data.",
    )

    @field_validator("database_url", "migrate_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            redis_clients.parse(value)  # ValueError: one line saying what is wrong
        return value or None

    @field_validator("blocked_identifiers", mode="before")
    @classmethod
    def _split_blocked(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(","))
        return value

    @field_validator("company_extra_free_domains", "company_work_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list | tuple):
            return value
        domains = []
        for part in value:
            domain = ascii_domain(str(part))
            if domain is None or "." not in domain:
                raise ValueError(f"not a domain name: {part!r}")
            domains.append(domain)
        return tuple(domains)

    @field_validator("signal_rules")
    @classmethod
    def _signal_rules(cls, value: str) -> str:
        parse_rules(value)  # SignalRuleError (a ValueError): one line naming the bad rule
        return value

    @model_validator(mode="after")
    def _heartbeat_well_within_timeouts(self) -> Settings:
        # three missed heartbeats before a holder counts as dead: a busy moment is not death
        for name, value in (
            ("KOALA_LOST_AFTER_SECONDS", self.lost_after_seconds),
            ("KOALA_VISIBILITY_TIMEOUT", self.visibility_timeout),
        ):
            if value < 3 * self.heartbeat_seconds:
                raise ValueError(
                    f"{name} must be at least 3 x KOALA_HEARTBEAT_SECONDS"
                    " (a live worker's messages must never look abandoned)"
                )
        return self

    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            self.breaker_threshold,
            self.breaker_min_calls,
            self.breaker_window_seconds,
            self.breaker_cooldown_seconds,
        )

    @property
    def jobs_queue(self) -> str:
        """The Celery queue of scheduled and long jobs, apart from the calls so that a
        backlog of calls never delays them (and they never count as backlog)."""
        return self.queue_name + ".jobs"

    @property
    def queue_key(self) -> str:
        """The Redis list kombu reads the ingest queue from (priority 0)."""
        return self.redis_key_prefix + self.queue_name

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL: not set (run `koala-ingest up` for embedded servers)")
        return self.database_url

    @property
    def connection_options(self) -> dict[str, Any]:
        """Keyword arguments of the psycopg connections that run repeated queries: the
        worker and admin pools, the CLI's. (The receiver's key reload and `migrate` run a
        query or two per connection: psycopg prepares after 5 runs, so never there.)"""
        return {} if self.db_prepared_statements else {"prepare_threshold": None}

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("REDIS_URL: not set (run `koala-ingest up` for embedded servers)")
        return self.redis_url


class ConfigError(Exception):
    """A configuration problem, already phrased as one line naming the variable."""


def _variable_name(field: str) -> str:
    """Errors name a field by its alias (`PORT`) or its name (`queue_max_depth`)."""
    info = Settings.model_fields.get(field)
    if info is None:
        return field.upper()
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"KOALA_{field.upper()}"


def describe(error: ValidationError) -> str:
    """One line per wrong variable: `PORT: Input should be a valid integer`."""
    lines = []
    for item in error.errors():
        if not item["loc"]:  # a rule across variables names them in its message
            lines.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        field = str(item["loc"][0])
        lines.append(f"{_variable_name(field)}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def load() -> Settings:
    """Read and validate the environment; raise ConfigError with a one-line reason."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; exits with one line when the environment is wrong."""
    try:
        return load()
    except ConfigError as error:
        print(f"koala-ingest: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
