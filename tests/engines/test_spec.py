"""The llama.cpp engine spec: what a runtime launches for a replica, and what it refuses
before any replica starts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from modelplane.engines import registry
from modelplane.engines.spec import LaunchContext

CTX = LaunchContext(
    host="127.0.0.1", port=8123, home="/srv/mp", threads=3, python="/venv/bin/python"
)


def _options(argv: tuple[str, ...]) -> dict[str, object]:
    return dict(json.loads(argv[argv.index("--options") + 1]))


def test_a_replica_runs_modelplane_engine_serve_with_the_endpoints_options() -> None:
    launch = registry.get("llamacpp").command(
        "smollm2", {"n_ctx": 2048}, dataclasses.replace(CTX, parent_pid=42)
    )
    argv = launch.argv
    assert argv[:5] == ("/venv/bin/python", "-m", "modelplane", "engine", "serve")
    assert argv[argv.index("--model") + 1] == "smollm2"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--parent-pid") + 1] == "42"
    # The runtime's thread share and weights cache fill in what the endpoint left out.
    assert _options(argv) == {"n_ctx": 2048, "n_threads": 3, "cache_dir": "/srv/mp/weights"}


def test_the_endpoints_own_thread_count_wins() -> None:
    argv = registry.get("llamacpp").command("smollm2", {"n_threads": 1}, CTX).argv
    assert _options(argv)["n_threads"] == 1
    assert "--parent-pid" not in argv


def test_a_pod_replica_listens_on_every_address_of_the_pod() -> None:
    c = registry.get("llamacpp").container("smollm2", {}, 8000)
    assert c.port == 8000
    assert c.args[c.args.index("--host") + 1] == "0.0.0.0"
    assert c.args[c.args.index("--port") + 1] == "8000"


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("smollm2", {"n_ctx": 1}, "options.n_ctx"),
        ("smollm2", {"no_such_option": 1}, "options.no_such_option"),
        ("/no/such/file.gguf", {}, "file.gguf"),
    ],
)
def test_bad_options_or_models_are_refused_naming_what_is_wrong(
    model: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        registry.check("llamacpp", model, options)


def test_an_unknown_engine_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="llamacpp"):
        registry.get("no-such-engine")
