"""The endpoint spec: every section parses, and every refusal names its field."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from modelplane.errors import InvalidRequest
from modelplane.spec import (
    BalancingConfig,
    EndpointSpec,
    GatewayOptions,
    HealthCheck,
    Resources,
    memory_bytes,
)


def parse(external: bool = False, **fields: Any) -> EndpointSpec:
    return EndpointSpec.parse(external=external, options=fields.pop("options", {}), **fields)


def refused(external: bool = False, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse(external, **fields)
    return info.value


def test_an_empty_spec_has_every_default() -> None:
    spec = parse()
    assert spec.gateway == GatewayOptions()
    assert spec.gateway.balancing.strategy == "least_outstanding"
    assert spec.engine_options == {} and spec.provider is None
    assert spec.resources == Resources() and spec.autoscaling is None and spec.adapters == ()
    assert spec.view() == {"resources": {}, "autoscaling": None, "adapters": []}


def test_options_split_into_the_gateways_and_the_engines() -> None:
    spec = parse(
        options={
            "balancing": "round_robin",
            "queue": {"max_concurrency": 2},
            "limits": {"rpm": 10},
            "price": {"input_per_1m": 1.5},
            "log_prompts": True,
            "n_ctx": 2048,
        }
    )
    g = spec.gateway
    assert g.balancing == BalancingConfig(strategy="round_robin")
    assert g.queue.max_concurrency == 2 and g.limits.rpm == 10 and g.log_prompts
    assert g.price.cost(1_000_000, 0) == 1.5
    assert spec.engine_options == {"n_ctx": 2048}


def test_an_external_endpoint_has_its_address_and_credential_references() -> None:
    spec = parse(
        True,
        options={
            "base_url": "https://api.example/v1",
            "credentials": {"api_key": "secret:UP"},
            "headers": {"x-a": "1"},
            "health_check": {"interval_s": 5},
        },
    )
    assert spec.provider is not None and spec.provider.base_url == "https://api.example/v1"
    assert spec.provider.credentials == {"api_key": "secret:UP"}
    assert spec.provider.settings == {"headers": {"x-a": "1"}}
    assert spec.gateway.health_check == HealthCheck(interval_s=5)
    assert spec.engine_options == {}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"queue": {"max_waiting": -1}}, "options.queue.max_waiting"),
        ({"limits": {"rpm": 0}}, "options.limits.rpm"),
        ({"price": {"in": 1}}, "options.price.in"),
        ({"log_prompts": "yes"}, "options.log_prompts: must be true or false"),
        ({"balancing": 3}, "balancing must be a strategy name or an object"),
        ({"balancing": {"strategy": "prefix_cache", "load_factor": 0.5}}, "load_factor"),
        ({"health_check": {}}, "options.health_check is for external endpoints"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], says: str) -> None:
    err = refused(options=options)
    assert says in err.message and err.param == "options"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"base_url": "ftp://x"}, "options.base_url must be an http(s) URL"),
        ({"credentials": {"api_key": "sk-live-123"}}, "never to the secret itself"),
        ({"health_check": {"every": 5}}, "options.health_check.every"),
    ],
)
def test_bad_provider_options_are_refused(options: dict[str, Any], says: str) -> None:
    err = refused(True, options=options)
    assert says in err.message and err.param == "options"
    assert "sk-live" not in err.message


def test_resources_parse_kubernetes_shapes() -> None:
    spec = parse(
        resources={
            "cpu": 2.5,
            "memory": "4Gi",
            "gpus": 1,
            "gpu_type": "nvidia-l4",
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    )
    r = spec.resources
    assert r.cpu == 2.5 and r.memory_bytes == 4 * 1024**3 and r.gpus == 1
    assert r.tolerations[0].operator == "Exists" and r.tolerations[0].effect == "NoSchedule"
    assert memory_bytes("512Mi") == 512 * 1024**2 and memory_bytes("2G") == 2_000_000_000
    assert memory_bytes(1024) == 1024


@pytest.mark.parametrize(
    ("resources", "param"),
    [
        ({"cpu": 0}, "resources.cpu"),
        ({"memory": "lots"}, "resources.memory"),
        ({"gpus": -1}, "resources.gpus"),
        ({"gpu_type": "nvidia-l4"}, "resources"),
        ({"node_selector": {"bad key!": "x"}}, "resources.node_selector"),
        (
            {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]},
            "resources.tolerations[0].effect",
        ),
        ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "resources.tolerations[0]"),
        ({"disk": "10Gi"}, "resources.disk"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(resources: dict[str, Any], param: str) -> None:
    err = refused(resources=resources)
    assert err.param == param and err.message.startswith(param)


def test_autoscaling_bounds_are_ordered_and_bounded() -> None:
    spec = parse(autoscaling={"min_replicas": 0, "max_replicas": 8, "target_in_flight": 2})
    assert spec.autoscaling is not None and spec.autoscaling.max_replicas == 8
    assert spec.autoscaling.scale_down_idle_s == 300.0
    err = refused(autoscaling={"min_replicas": 3, "max_replicas": 2})
    assert (
        err.param == "autoscaling" and "min_replicas (3) is above max_replicas (2)" in err.message
    )
    err = refused(autoscaling={"target_in_flight": 0})
    assert err.param == "autoscaling.target_in_flight"
    spec.check_bounds(8, 8)
    with pytest.raises(InvalidRequest) as info:
        spec.check_bounds(1, 4)
    assert info.value.param == "autoscaling.max_replicas"
    assert "at most 4" in info.value.message
    assert "MODELPLANE_MAX_REPLICAS_PER_ENDPOINT" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        parse().check_bounds(5, 4)
    assert info.value.param == "replicas" and "between 0 and 4" in info.value.message


def test_adapters_have_unique_names_and_sources_of_a_known_shape() -> None:
    spec = parse(
        adapters=[
            {"name": "sql", "source": "hf://acme/sql-lora@v2", "scale": 0.8},
            {"name": "legal", "source": "/models/legal-lora.gguf"},
            {"name": "mine", "source": "file:file-abc123"},
        ]
    )
    assert [a.name for a in spec.adapters] == ["sql", "legal", "mine"]
    assert spec.view()["adapters"][1] == {"name": "legal", "source": "/models/legal-lora.gguf"}
    twice = [{"name": "a", "source": "/x"}, {"name": "a", "source": "/y"}]
    err = refused(adapters=twice)
    assert err.param == "adapters" and "'a' is given twice" in err.message
    err = refused(adapters=[{"name": "a", "source": "s3://bucket/x"}])
    assert err.param == "adapters[0].source"
    err = refused(adapters=[{"name": "-a", "source": "/x"}])
    assert err.param == "adapters[0].name"


def test_an_external_endpoint_has_no_resources_scaling_or_adapters() -> None:
    err = refused(True, resources={"cpu": 1})
    assert err.param == "resources" and "provider runs the model" in err.message
    assert refused(True, autoscaling={}).param == "autoscaling"


def test_a_stored_spec_that_no_longer_parses_keeps_defaults_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "modelplane.spec"):
        spec = EndpointSpec.load(
            "old",
            external=False,
            options={"queue": {"max_waiting": -1}, "limits": {"rpm": 5}, "n_ctx": 512},
            resources={"cpu": -1},
            autoscaling={"min_replicas": 5, "max_replicas": 1},
        )
    assert spec.gateway.limits.rpm == 5 and spec.gateway.queue.max_waiting == 100
    assert spec.engine_options == {"n_ctx": 512}
    assert spec.resources == Resources() and spec.autoscaling is None
    logged = caplog.text
    assert "endpoint 'old'" in logged and "queue.max_waiting" in logged and "resources" in logged
