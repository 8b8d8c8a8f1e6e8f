"""Typed settings: every knob is declared and documented once, here.

Sources, lowest to highest precedence: defaults → ``modelplane.yaml`` → ``.env`` →
``MODELPLANE_*`` environment variables (and keyword arguments, for tests).
The YAML file is looked up as ``$MODELPLANE_CONFIG``, else ``./modelplane.yaml``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from modelplane.identity import Role

PLACEHOLDERS = ("changeme", "change-me", "change_me", "placeholder", "example", "xxxxxxxx")


ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class JwtSettings(BaseModel):
    """Accept bearer JWTs from one OIDC issuer (``jwt:`` in ``modelplane.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    """Must equal the token's ``iss``."""
    audience: str | None = None
    """When set, must be in the token's ``aud``."""
    jwks_url: str | None = None
    """The issuer's JWKS (``…/.well-known/jwks.json``); https, or http on loopback only."""
    jwks_file: Path | None = None
    """A JWKS on disk instead of ``jwks_url`` (exactly one of the two)."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    """Accepted signing algorithms; asymmetric only."""
    team_claim: str = "team"
    """Claim holding the caller's team *name*; required unless the role is ``admin``."""
    role_claim: str = "role"
    """Claim holding one of admin, team_admin, member, viewer."""
    scope_claim: str = "scope"
    """Space-separated string or list; values other than inference/read/write are ignored."""
    default_role: Role = "member"
    """Role of tokens without a role claim (and of no modelplane user)."""
    email_claim: str = "email"
    """Claim holding the caller's email, matched against users' emails when ``sub``
    names no user."""
    leeway_s: float = Field(default=30.0, ge=0)
    """Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    jwks_refresh_s: float = Field(default=300.0, gt=0)
    """How often the JWKS is re-read."""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one signing algorithm, e.g. RS256")
        for alg in v:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"'{alg}' cannot be accepted: a JWKS holds public keys, so only asymmetric "
                    f"algorithms are allowed: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
                )
        return v

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None:
            url = urlsplit(v)
            if url.scheme != "https" and not (url.scheme == "http" and url.hostname in _LOOPBACK):
                raise ValueError("jwks_url must be https:// (plain http only on loopback)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> JwtSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        return self


def _default_home() -> Path:
    return Path(os.environ.get("MODELPLANE_HOME", "~/.modelplane")).expanduser()


class YamlSettingsSource(PydanticBaseSettingsSource):
    """Reads the top-level keys of ``modelplane.yaml`` that name a setting."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = Path(os.environ.get("MODELPLANE_CONFIG", "modelplane.yaml"))
        self._data: dict[str, Any] = {}
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping at the top level")
            self._data = loaded

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELPLANE_", env_file=".env", extra="ignore", frozen=True
    )

    mode: Literal["development", "production"] = "development"
    """``production`` refuses to start without a strong ``MODELPLANE_SECRET_KEY`` (no
    generated master secret), so every server process shares one that is backed up."""

    home: Path = Field(default_factory=_default_home)
    """Where modelplane keeps its data: the SQLite database, admin.key, logs."""

    database_url: str = ""
    """SQLAlchemy URL. Empty means SQLite at ``$MODELPLANE_HOME/modelplane.db``.
    ``postgresql://…`` is accepted and mapped to the asyncpg driver."""

    host: str = "127.0.0.1"
    port: int = 8080

    workers: int = Field(default=1, ge=1, le=64)
    """Server processes (``modelplane serve --workers N``). They share the port, the
    database and (with ``redis_url``) limits and caches; one of them, chosen by a lock,
    supervises the local replicas and the others route by the state it publishes."""

    runtime: str = "local"
    """Where this server runs the replicas of the endpoints it owns, by the name of a
    registered runtime (``modelplane.runtimes.registry``; plugins add more). ``local``:
    supervised subprocesses on this machine; with ``workers > 1`` it is the shared
    variant by itself (one worker process, chosen by a lock, supervises; the others
    follow the state it publishes), which ``local-shared`` forces even for one worker.
    The server refuses to start with a name no runtime is registered under."""

    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=63)
    """This server's node. Each endpoint run by modelplane belongs to one node (the node
    of the server that created it, or the ``node`` given when creating it); only servers
    of that node run its replicas, and they publish their addresses in the database so
    that servers of every other node route to them. Servers that share one database
    need distinct node names unless they are the workers of one machine."""

    replica_host: str = "127.0.0.1"
    """The address this node's replicas listen on and are published at. Loopback only
    serves this machine; when servers on other machines must route to them, set it to
    an address of this machine that they can reach (and keep that network private:
    replicas take requests without authentication)."""

    max_body_bytes: int = 4 * 1024 * 1024
    """Requests with a larger body are refused with 413 before they are read."""

    reconcile_interval_s: float = 2.0
    """How often the reconciler compares desired endpoints (DB) with running replicas."""

    cache_refresh_interval_s: float = 1.0
    """How often keys and endpoints are re-read into the in-process hot-path cache."""

    replica_start_timeout_s: float = 120.0
    """A replica that does not answer /health in this time is killed and restarted."""

    health_interval_s: float = 2.0
    """How often ready replicas are health-checked."""

    restart_backoff_max_s: float = 30.0
    """Crash-restart backoff doubles from 0.5 s up to this ceiling."""

    upstream_timeout_s: float = 600.0
    """Total time a proxied request may take (long generations stream for a while)."""

    local_upstream_timeout_s: float = Field(default=120.0, gt=0)
    """The same for routes whose every target is an endpoint modelplane runs itself,
    when shorter: a local replica that stopped answering frees its client after this
    (a route's ``timeouts.total_s`` overrides both)."""
    max_replicas_per_endpoint: int = Field(default=16, ge=1, le=10_000)
    """The most replicas one endpoint may ask for (its ``replicas`` and its
    ``autoscaling.max_replicas``); a write above it is refused with a 400. Endpoints
    stored before it was lowered keep what they have until they are changed."""

    engine_threads: int = Field(default=0, ge=0)
    """Threads per embedded-engine replica; 0 means all cores divided among replicas."""

    admin_key: SecretStr | None = None
    """Use this as the first admin key instead of minting one (for automated installs)."""

    bootstrap_endpoint: bool = True
    """``modelplane up`` creates the bundled ``smollm2`` endpoint when none exist."""

    secret_key: SecretStr | None = None
    """Master secret that encrypts provider credentials at rest. Unset: a random one is
    generated into ``$MODELPLANE_HOME/secret.key``; every server sharing a database
    needs the same one."""

    jwt: JwtSettings | None = None
    """Accept bearer JWTs from this OIDC issuer besides API keys (``issuer``,
    ``jwks_url`` or ``jwks_file``, ``audience``, claim names for team, role and scopes;
    see ``modelplane/control/jwt.py``). Set it in ``modelplane.yaml``."""

    routes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Routes declared here (GitOps) are reconciled into the database at start; the
    control API cannot change them. Same shape as ``PUT /api/routes/{name}``."""

    redis_url: str = ""
    """``redis://…`` to share rate limits, budget spend and the response cache between
    server processes; empty means in-process memory (each process counts alone)."""

    response_cache_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Memory bound of the in-process response cache (when ``redis_url`` is empty)."""

    governance_enabled: bool = True
    """Rate limits, budgets and usage accounting on the request path. Switch off only to
    measure what they cost (``bench/gateway.py --governance both``); authentication and
    tenant isolation stay on either way."""

    usage_flush_interval_s: float = Field(default=0.5, gt=0)
    """Usage records (one per ``/v1`` request) are written in batches at least this
    often; the last ones are written when the server stops."""

    usage_batch_max: int = Field(default=500, ge=1)
    """A batch is written early once it holds this many records."""

    usage_queue_max: int = Field(default=10_000, ge=1)
    """Usage records waiting to be written, at most; past it (the database has been
    unreachable for a while) new records are dropped with a warning, never waited for."""

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    access_log: bool = True
    """One summary line per ``/v1`` request, at INFO on the ``modelplane.access`` logger:
    request id, route, endpoint, team, key id, status, latency, time to first token,
    token counts. Never a prompt or an answer, unless the endpoint that answered has
    ``options.log_prompts: true``. Costs 35 to 75 µs of CPU a request
    (docs/observability.md)."""

    metrics_enabled: bool = True
    """Record Prometheus metrics and serve them at ``/metrics`` (see
    docs/observability.md); ``false`` records nothing and ``/metrics`` is a 404."""

    metrics_require_key: bool = False
    """``/metrics`` asks for an API key with the ``read`` scope. Off by default so that
    Prometheus can scrape it: it holds counts and endpoint, route and team names only."""

    otel_endpoint: str = ""
    """OpenTelemetry collector (OTLP over HTTP, e.g. ``http://otel-collector:4318``) that
    traces are exported to; empty: no tracing, at no cost. Needs ``pip install
    'modelplane[otlp]'``. ``OTEL_EXPORTER_OTLP_HEADERS`` and the other standard
    ``OTEL_EXPORTER_OTLP_*`` variables apply."""

    otel_service_name: str = "modelplane"
    """``service.name`` of the exported spans."""

    otel_sample_ratio: float = Field(default=0.01, ge=0, le=1)
    """Share of requests traced when the caller sends no ``traceparent`` (one that does
    is traced as its sampled flag says, so a request can always ask to be traced). A
    traced request costs the gateway about 0.5 ms of CPU (the OpenTelemetry SDK: six
    spans and their export); one that is not costs nothing measurable. At ``1`` the
    gateway's throughput more than halves against a microsecond upstream (bench/README.md)."""

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        if self.mode != "production":
            return self
        value = self.secret_key.get_secret_value() if self.secret_key else ""
        if not value:
            raise ValueError(
                "MODELPLANE_MODE=production needs MODELPLANE_SECRET_KEY (the master secret "
                "that encrypts provider credentials): generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` and give the "
                "same one to every server process"
            )
        lowered = value.lower()
        if len(value) < 32 or len(set(value)) < 10 or any(p in lowered for p in PLACEHOLDERS):
            raise ValueError(
                "MODELPLANE_SECRET_KEY looks like a placeholder or is shorter than 32 "
                "characters; use a random one (see MODELPLANE_MODE)"
            )
        return self

    @field_validator("otel_endpoint", mode="after")
    @classmethod
    def _otlp_installed(cls, v: str) -> str:
        module = "opentelemetry.exporter.otlp.proto.http"
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if v and not found:
            raise ValueError(
                "exporting traces (MODELPLANE_OTEL_ENDPOINT) needs the OTLP exporter: "
                "pip install 'modelplane[otlp]'"
            )
        return v

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, v: str) -> str:
        if not NODE_NAME.match(v):
            raise ValueError(
                "node_name must be 1-63 characters of a-z, A-Z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            YamlSettingsSource(settings_cls),
            file_secret_settings,
        )

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{self.home / 'modelplane.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"
