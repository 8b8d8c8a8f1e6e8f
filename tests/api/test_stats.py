"""``GET /api/stats``: the live statistics behind the dashboard, fed by real requests
through the gateway to the bundled model."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import Server


def _stats(server: Server, client: httpx.Client | None = None, **params: Any) -> dict[str, Any]:
    resp = (client or server.http).get("/api/stats", params={"window": 60, **params})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_answers_and_streams_are_counted_with_their_tokens(shared_server: Server) -> None:
    before = _stats(shared_server, endpoint="smollm2")["endpoints"].get("smollm2")
    client = shared_server.openai()
    messages = [{"role": "user", "content": "What is the capital of Italy?"}]
    answer = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=20)
    assert answer.usage is not None
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=messages,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    after = _stats(shared_server, endpoint="smollm2")["endpoints"]["smollm2"]
    was = before["totals"] if before else {"requests": 0, "tokens": 0}
    assert after["totals"]["requests"] - was["requests"] == 2
    expected = answer.usage.completion_tokens + usage.completion_tokens
    assert after["totals"]["tokens"] - was["tokens"] == expected
    assert after["totals"]["ttft_p50_ms"] > 0
    assert sum(after["series"]["requests"]) == after["totals"]["requests"]


def test_errors_are_kept_without_prompts(shared_server: Server) -> None:
    resp = shared_server.http.post(
        "/v1/chat/completions",
        headers={"x-request-id": "stats-test-400"},
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": "secret prompt"}],
            "temperature": "hot",
        },
    )
    assert resp.status_code == 400
    errors = shared_server.http.get("/api/stats/errors").json()["data"]
    [mine] = [e for e in errors if e["request_id"] == "stats-test-400"]
    assert mine["status"] == 400 and mine["model"] == "smollm2"
    assert "secret prompt" not in str(mine)
    assert _stats(shared_server)["recent_errors"][0]["request_id"] == "stats-test-400"


def test_callers_see_only_the_models_they_may_use(shared_server: Server) -> None:
    assert shared_server.http.post("/api/teams", json={"name": "stats-team"}).status_code == 201
    resp = shared_server.http.post(
        "/api/keys", json={"name": "stats-member", "role": "member", "team": "stats-team"}
    )
    assert resp.status_code == 201, resp.text
    shared_server.openai().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    missing = shared_server.http.post(
        "/v1/chat/completions", json={"model": "not-theirs", "messages": []}
    )
    assert missing.status_code == 404
    assert "not-theirs" in _stats(shared_server)["endpoints"]
    headers = {"authorization": f"Bearer {resp.json()['key']}"}
    with httpx.Client(base_url=shared_server.base_url, headers=headers) as member:
        seen = _stats(shared_server, member)
        # The bundled endpoint is the platform's, shared with every team; the name that
        # is no model of theirs (nor anyone's) stays out of their view.
        assert list(seen["endpoints"]) == ["smollm2"]
        assert seen["overall"]["totals"] == seen["endpoints"]["smollm2"]["totals"]
        assert all(e["model"] != "not-theirs" for e in seen["recent_errors"])
        errors = member.get("/api/stats/errors").json()["data"]
        assert all(e["model"] != "not-theirs" for e in errors)
    assert httpx.get(shared_server.base_url + "/api/stats").status_code == 401
