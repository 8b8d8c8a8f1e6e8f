"""An endpoint's whole spec, parsed once: when it is written (every error a 400 that
names the field) and when its record is made from a stored row. The request path
reads the typed result and never an option dictionary.

``options`` stays one flat object in the API: the gateway's options
(:data:`~modelplane.spec.gateway.GATEWAY_OPTIONS`) beside the engine's (a local
endpoint) or the provider's (an external one). ``resources``, ``autoscaling`` and
``adapters`` are fields of their own. Whether the engine accepts its options is the
engine spec's to say (``engines/spec.py``); the control layer asks it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from modelplane.errors import InvalidRequest, first_invalid
from modelplane.spec.deploy import Adapter, Adapters, Autoscaling, Resources
from modelplane.spec.gateway import GATEWAY_OPTIONS, GatewayOptions

log = logging.getLogger(__name__)

CREDENTIAL_REF = re.compile(r"^(env|secret):[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

_ADDRESS = ("base_url", "credentials")

_BOUND = "(the server's max_replicas_per_endpoint, MODELPLANE_MAX_REPLICAS_PER_ENDPOINT)"

_ADAPTERS: TypeAdapter[tuple[Adapter, ...]] = TypeAdapter(Adapters)


class ProviderOptions(BaseModel):
    """An external endpoint's address and credential references, and the provider's
    own options (``headers``, ``region``, …) as given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = None
    """None: the provider's default address."""
    credentials: dict[str, str] = {}
    """A field of the provider (``api_key``, …) → ``env:VARIABLE`` or ``secret:NAME``."""
    settings: dict[str, Any] = {}


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway: GatewayOptions = GatewayOptions()
    engine_options: dict[str, Any] = {}
    """A local endpoint's options for its engine (every option the gateway does not read)."""
    provider: ProviderOptions | None = None
    """Set for external endpoints."""
    resources: Resources = Resources()
    autoscaling: Autoscaling | None = None
    adapters: tuple[Adapter, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        external: bool,
        options: Mapping[str, Any],
        resources: Mapping[str, Any] | None = None,
        autoscaling: Mapping[str, Any] | None = None,
        adapters: Sequence[Mapping[str, Any]] | None = None,
    ) -> EndpointSpec:
        """The spec of an endpoint being written; ``InvalidRequest`` naming the field
        (``param``: ``options``, ``resources``, …) for the first thing that is wrong."""
        if not isinstance(options, Mapping):
            raise InvalidRequest("options must be an object", param="options")
        try:
            gateway = GatewayOptions.parse(options)
        except ValueError as exc:
            raise InvalidRequest(f"options.{exc}", param="options") from None
        rest = {k: v for k, v in options.items() if k not in GATEWAY_OPTIONS}
        provider = None
        if external:
            provider = _provider(rest)
            if resources or autoscaling is not None or adapters:
                field = (
                    "resources"
                    if resources
                    else "autoscaling"
                    if autoscaling is not None
                    else "adapters"
                )
                raise InvalidRequest(
                    f"{field} are for endpoints modelplane runs; an external endpoint's "
                    "provider runs the model",
                    param=field,
                )
        elif gateway.health_check is not None:
            raise InvalidRequest(
                "options.health_check is for external endpoints; modelplane checks its own "
                "replicas' /health every MODELPLANE_HEALTH_INTERVAL_S",
                param="options",
            )
        return cls(
            gateway=gateway,
            engine_options={} if external else rest,
            provider=provider,
            resources=_section("resources", Resources.model_validate, resources or {}),
            autoscaling=None
            if autoscaling is None
            else _section("autoscaling", Autoscaling.model_validate, autoscaling),
            adapters=_section("adapters", _ADAPTERS.validate_python, adapters or ()),
        )

    @classmethod
    def load(
        cls,
        name: str,
        *,
        external: bool,
        options: Mapping[str, Any],
        resources: Mapping[str, Any] | None = None,
        autoscaling: Mapping[str, Any] | None = None,
        adapters: Sequence[Mapping[str, Any]] | None = None,
    ) -> EndpointSpec:
        """The spec of a stored endpoint. What no longer parses (written around the
        API's checks, or by an older version) keeps its default, with a warning, so one
        bad row never stops the server from loading the others."""

        def warn(field: str, why: str) -> None:
            log.warning("endpoint '%s': invalid %s (%s); using its default", name, field, why)

        rest = {k: v for k, v in options.items() if k not in GATEWAY_OPTIONS}
        provider = None
        if external:
            try:
                provider = _provider(rest)
            except InvalidRequest as exc:
                warn("provider options", exc.message)
                provider = ProviderOptions(
                    settings={k: v for k, v in rest.items() if k not in _ADDRESS}
                )
        gateway = GatewayOptions.load(options, lambda option, why: warn("options", why))
        if not external and gateway.health_check is not None:
            gateway = gateway.model_copy(update={"health_check": None})
        return cls(
            gateway=gateway,
            engine_options={} if external else rest,
            provider=provider,
            resources=_lenient("resources", Resources.model_validate, resources or {}, warn)
            or Resources(),
            autoscaling=None
            if autoscaling is None
            else _lenient("autoscaling", Autoscaling.model_validate, autoscaling, warn),
            adapters=_lenient("adapters", _ADAPTERS.validate_python, adapters or (), warn) or (),
        )

    @staticmethod
    def check_replicas(replicas: int | None, max_replicas: int) -> None:
        """``replicas`` (when given) within the server's bound."""
        if replicas is not None and not 0 <= replicas <= max_replicas:
            raise InvalidRequest(
                f"replicas must be between 0 and {max_replicas} {_BOUND}", param="replicas"
            )

    def check_bounds(self, replicas: int | None, max_replicas: int) -> None:
        """``replicas`` and ``autoscaling.max_replicas`` within the server's bound."""
        self.check_replicas(replicas, max_replicas)
        scaling = self.autoscaling
        if scaling is not None and scaling.max_replicas > max_replicas:
            raise InvalidRequest(
                f"autoscaling.max_replicas must be at most {max_replicas} {_BOUND}",
                param="autoscaling.max_replicas",
            )

    def view(self) -> dict[str, Any]:
        """``resources``, ``autoscaling`` and ``adapters`` as the API shows them."""
        return {
            "resources": self.resources.model_dump(exclude_defaults=True),
            "autoscaling": None if self.autoscaling is None else self.autoscaling.model_dump(),
            "adapters": [a.model_dump(exclude_none=True) for a in self.adapters],
        }


def _provider(rest: Mapping[str, Any]) -> ProviderOptions:
    base_url = rest.get("base_url")
    if base_url is not None and not (
        isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
    ):
        raise InvalidRequest("options.base_url must be an http(s) URL", param="options")
    creds = rest.get("credentials") or {}
    if not isinstance(creds, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and CREDENTIAL_REF.match(v)
        for k, v in creds.items()
    ):
        # Options are shown by the API; a secret written here would be shown too.
        raise InvalidRequest(
            "options.credentials maps a field to 'env:VARIABLE' or 'secret:NAME', never "
            "to the secret itself",
            param="options",
        )
    settings = {k: v for k, v in rest.items() if k not in _ADDRESS}
    return ProviderOptions(base_url=base_url, credentials=dict(creds), settings=settings)


def _section(field: str, parse: Any, value: object) -> Any:
    try:
        return parse(value)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        param = field if where == "body" else f"{field}{'' if where[0] == '[' else '.'}{where}"
        raise InvalidRequest(f"{param}: {why}", param=param) from None


def _lenient(field: str, parse: Any, value: object, warn: Callable[[str, str], None]) -> Any:
    try:
        return parse(value)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        warn(field, f"{where}: {why}")
        return None
