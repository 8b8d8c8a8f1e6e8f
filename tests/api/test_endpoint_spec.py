"""Resources, autoscaling bounds and adapters through the control API of a real
server; the replica bound; what the gateway says of endpoints it cannot use that way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers import Server

MAX_REPLICAS = 4

RESOURCES = {
    "cpu": 2.0,
    "memory": "4Gi",
    "gpus": 1,
    "gpu_type": "nvidia-l4",
    "node_selector": {"pool": "gpu"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
SCALING = {"min_replicas": 0, "max_replicas": 3, "target_in_flight": 2.0, "scale_down_idle_s": 60.0}


def _plugin(where: Path) -> Path:
    """A distribution on disk whose entry point registers ``tests/api/lora_engine.py``."""
    info = where / "mp_lora_test-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mp-lora-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[modelplane.engines]\nlora-test = tests.api.lora_engine:LoraSpec\n"
    )
    return where


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    plugins = _plugin(tmp_path_factory.mktemp("plugins"))
    srv = Server(
        home,
        f"sqlite:///{home / 'modelplane.db'}",
        MODELPLANE_MAX_REPLICAS_PER_ENDPOINT=str(MAX_REPLICAS),
        PYTHONPATH=os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p),
    ).start()
    try:
        yield srv
    finally:
        srv.close()


def create(server: Server, name: str, **body: Any) -> Any:
    return server.http.post(
        "/api/endpoints", json={"name": name, "model": "smollm2", "replicas": 0, **body}
    )


def test_resources_and_autoscaling_round_trip(server: Server) -> None:
    r = create(server, "sized", resources=RESOURCES, autoscaling=SCALING)
    assert r.status_code == 201, r.text
    assert r.json()["resources"] == RESOURCES and r.json()["autoscaling"] == SCALING
    assert server.endpoint("sized")["resources"] == RESOURCES
    listed = {e["name"]: e for e in server.http.get("/api/endpoints").json()["data"]}
    assert listed["sized"]["autoscaling"] == SCALING and listed["sized"]["adapters"] == []
    # New bounds keep the replicas; new resources roll them (a new generation).
    r = server.http.patch("/api/endpoints/sized", json={"autoscaling": {"max_replicas": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["autoscaling"]["max_replicas"] == 2 and r.json()["generation"] == 1
    assert r.json()["resources"] == RESOURCES  # what the patch did not name stays
    r = server.http.patch("/api/endpoints/sized", json={"resources": {"cpu": 0.5}})
    assert r.json()["resources"] == {"cpu": 0.5} and r.json()["generation"] == 2
    r = server.http.patch("/api/endpoints/sized", json={"autoscaling": None, "resources": None})
    assert r.json()["autoscaling"] is None and r.json()["resources"] == {}
    assert server.http.delete("/api/endpoints/sized").status_code == 204


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"resources": {"cpu": -1}}, "resources.cpu", "greater than 0"),
        ({"resources": {"memory": "lots"}}, "resources.memory", "not an amount of memory"),
        ({"resources": {"disk": 1}}, "resources.disk", "Extra inputs"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "autoscaling", "above"),
        ({"adapters": [{"name": "a", "source": "ftp://x"}]}, "adapters[0].source", "source"),
    ],
)
def test_bad_sections_are_refused_naming_the_field(
    server: Server, body: dict[str, Any], param: str, says: str
) -> None:
    r = create(server, "bad", **body)
    assert r.status_code == 400, r.text
    assert r.json()["param"] == param and says in r.json()["detail"]
    assert server.http.get("/api/endpoints/bad").status_code == 404


def test_replicas_are_bounded_by_the_setting(server: Server) -> None:
    r = create(server, "many", replicas=MAX_REPLICAS + 1)
    assert r.status_code == 400 and r.json()["param"] == "replicas"
    detail = r.json()["detail"]
    assert f"between 0 and {MAX_REPLICAS}" in detail
    assert "MODELPLANE_MAX_REPLICAS_PER_ENDPOINT" in detail
    r = create(server, "many", autoscaling={"max_replicas": MAX_REPLICAS + 1})
    assert r.status_code == 400 and r.json()["param"] == "autoscaling.max_replicas"
    assert "MODELPLANE_MAX_REPLICAS_PER_ENDPOINT" in r.json()["detail"]
    assert create(server, "many").status_code == 201
    r = server.http.patch("/api/endpoints/many", json={"replicas": MAX_REPLICAS + 1})
    assert r.status_code == 400 and f"between 0 and {MAX_REPLICAS}" in r.json()["detail"]
    assert server.http.delete("/api/endpoints/many").status_code == 204


def test_adapters_need_an_engine_that_serves_them(server: Server) -> None:
    adapters = [
        {"name": "sql", "source": "hf://acme/sql-lora", "scale": 0.5},
        {"name": "legal", "source": "/models/legal.gguf"},
    ]
    r = create(server, "plain", adapters=adapters)
    assert r.status_code == 400 and r.json()["param"] == "adapters"
    assert "cannot serve LoRA adapters" in r.json()["detail"]
    r = create(server, "tuned", engine="lora-test", adapters=adapters, options={"rank": 4})
    assert r.status_code == 201, r.text
    assert server.endpoint("tuned")["adapters"] == adapters
    twice = [adapters[0], {**adapters[1], "name": "sql"}]
    r = server.http.patch("/api/endpoints/tuned", json={"adapters": twice})
    assert r.status_code == 400 and "'sql' is given twice" in r.json()["detail"]
    r = server.http.patch("/api/endpoints/tuned", json={"options": {"rank": "high"}})
    assert r.status_code == 400 and "options.rank" in r.json()["detail"]
    r = server.http.patch("/api/endpoints/tuned", json={"adapters": []})
    assert r.status_code == 200 and r.json()["adapters"] == []
    assert server.http.delete("/api/endpoints/tuned").status_code == 204


def test_external_endpoints_take_no_resources(server: Server) -> None:
    r = server.http.post(
        "/api/endpoints",
        json={
            "name": "ext",
            "provider": "openai",
            "model": "m",
            "options": {"base_url": "http://127.0.0.1:9/v1"},
            "resources": {"cpu": 1},
        },
    )
    assert r.status_code == 400 and r.json()["param"] == "resources"


def test_checking_engine_options_never_loads_llama_cpp_in_the_server(server: Server) -> None:
    r = create(server, "checked", options={"n_ctx": 1024, "temperature": 0.2})
    assert r.status_code == 201, r.text
    bad = server.http.patch("/api/endpoints/checked", json={"options": {"n_ctx": 1}})
    assert bad.status_code == 400 and "options.n_ctx" in bad.json()["detail"]
    assert server.proc is not None
    # Importing llama_cpp maps its shared library into the process.
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libllama" not in maps and "libggml" not in maps
    assert server.http.delete("/api/endpoints/checked").status_code == 204


def test_embeddings_to_an_engine_that_cannot_embed_is_a_400(server: Server) -> None:
    assert create(server, "chatty").status_code == 201
    try:
        with pytest.raises(openai.BadRequestError) as info:
            server.openai().embeddings.create(model="chatty", input="hello")
        assert info.value.status_code == 400
        body: Any = info.value.body
        assert "cannot create embeddings" in body["message"] and body["param"] == "model"
    finally:
        server.http.delete("/api/endpoints/chatty")


def test_models_retrieve_with_the_openai_sdk(server: Server) -> None:
    assert create(server, "listed").status_code == 201
    assert server.http.post("/api/teams", json={"name": "red"}).status_code == 201
    key = server.http.post("/api/keys", json={"name": "red-k", "team": "red"}).json()["key"]
    assert create(server, "private", team="red", shared_with=[]).status_code == 201
    assert create(server, "hidden", team=None, shared_with=[]).status_code == 201
    try:
        model = server.openai().models.retrieve("listed")
        assert model.id == "listed" and model.object == "model" and model.owned_by
        created = datetime.fromisoformat(server.endpoint("listed")["created_at"])
        assert model.created == int(created.timestamp())
        with pytest.raises(openai.NotFoundError) as info:
            server.openai().models.retrieve("no-such-model")
        body: Any = info.value.body
        assert body["code"] == "model_not_found" and "no-such-model" in body["message"]
        red = server.openai(key)
        assert red.models.retrieve("private").id == "private"
        visible = {m.id for m in red.models.list()}
        for name in ("listed", "private", "hidden"):
            if name in visible:
                assert red.models.retrieve(name).id == name
            else:
                with pytest.raises(openai.NotFoundError):
                    red.models.retrieve(name)
        assert "hidden" not in visible  # the platform's, shared with nobody
    finally:
        for name in ("listed", "private", "hidden"):
            server.http.delete(f"/api/endpoints/{name}")
