"""The typed spec of an endpoint: one place where what an endpoint declares is parsed
and checked (``options``, ``resources``, ``autoscaling``, ``adapters``), so the API, the
control plane and the gateway agree on it and the request path reads typed values.

A foundation: it imports nothing of modelplane above ``errors``.
"""

from modelplane.spec.deploy import Adapter, Autoscaling, Resources, Toleration, memory_bytes
from modelplane.spec.endpoint import CREDENTIAL_REF, EndpointSpec, ProviderOptions
from modelplane.spec.gateway import (
    GATEWAY_OPTIONS,
    BalancingConfig,
    GatewayOptions,
    HealthCheck,
    Price,
    QueueConfig,
    RateLimits,
)

__all__ = [
    "CREDENTIAL_REF",
    "GATEWAY_OPTIONS",
    "Adapter",
    "Autoscaling",
    "BalancingConfig",
    "EndpointSpec",
    "GatewayOptions",
    "HealthCheck",
    "Price",
    "ProviderOptions",
    "QueueConfig",
    "RateLimits",
    "Resources",
    "Toleration",
    "memory_bytes",
]
