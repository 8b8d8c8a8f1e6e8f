"""One engine replica (``modelplane engine serve``) with the bundled model, over HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from modelplane.engines.base import Capabilities, Delta, GenerateRequest
from modelplane.engines.scheduler import Scheduler, Sequence
from modelplane.engines.server import create_engine_app
from tests.helpers import COUNTING, LONG, eventually, free_port, until


def start_engine(workdir: Path, max_batch: int = 1) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = workdir / "engine.log"
    opts = {"n_threads": 1, "max_queue": 2, "max_batch": max_batch}
    with log.open("ab") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelplane",
                "engine",
                "serve",
                "--model",
                "smollm2",
                "--port",
                str(port),
                "--options",
                json.dumps(opts),
            ],
            stdout=f,
            stderr=f,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    eventually(
        lambda: proc.poll() is None and httpx.get(url + "/health").status_code == 200,
        timeout=60,
        what="engine /health",
    )
    return url, proc


@pytest.fixture(scope="module", params=[1, 4], ids=["sequential", "batched"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One engine per executor: one sequence at a time, and batched decoding."""
    workdir = tmp_path_factory.mktemp("engine")
    url, proc = start_engine(workdir, request.param)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # uvicorn re-raises the signal after a graceful shutdown: -SIGTERM is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM), (workdir / "engine.log").read_text()[-2000:]


@pytest.fixture(scope="module")
def client(engine: str) -> Iterator[OpenAI]:
    c = OpenAI(base_url=engine + "/v1", api_key="unused", max_retries=0)
    yield c
    c.close()


def health(engine: str) -> dict[str, int]:
    data: dict[str, int] = httpx.get(engine + "/health").json()
    return data


def test_answers_simple_questions_correctly(client: OpenAI) -> None:
    cases = {
        "What is the capital of France?": "paris",
        "What is the capital of Japan?": "tokyo",
        "Who wrote Romeo and Juliet?": "shakespeare",
        "What color is the sky on a clear day?": "blue",
    }
    for question, answer in cases.items():
        r = client.chat.completions.create(
            model="smollm2", max_tokens=40, messages=[{"role": "user", "content": question}]
        )
        assert answer in (r.choices[0].message.content or "").lower(), question


def test_long_answers_do_not_loop(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        max_tokens=300,
        messages=[{"role": "user", "content": "Who wrote Romeo and Juliet?"}],
    )
    words = (r.choices[0].message.content or "").split()
    grams = [tuple(words[i : i + 6]) for i in range(len(words) - 5)]
    # Plain greedy decoding repeats one sentence until max_tokens (0.48 here).
    assert len(set(grams)) / max(1, len(grams)) > 0.9


def test_max_tokens_and_max_completion_tokens(client: OpenAI) -> None:
    msgs = [{"role": "user", "content": "Write a long story about a dragon."}]
    r = client.chat.completions.create(model="m", max_tokens=7, messages=msgs)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 7
    assert r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model="m", max_completion_tokens=3, messages=msgs)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_stop_sequence_ends_the_answer_without_it(client: OpenAI) -> None:
    r = client.completions.create(
        model="m", prompt=COUNTING, max_tokens=40, temperature=0, stop=["9"]
    )
    text = r.choices[0].text
    assert "9" not in text
    assert r.choices[0].finish_reason == "stop"
    assert "5" in text


def test_seed_makes_sampling_repeatable(client: OpenAI) -> None:
    kw = {"model": "m", "prompt": "Once upon a time", "max_tokens": 20, "temperature": 1.0}
    a = client.completions.create(**kw, seed=42).choices[0].text  # type: ignore[call-overload]
    b = client.completions.create(**kw, seed=42).choices[0].text  # type: ignore[call-overload]
    others = {
        client.completions.create(**kw, seed=s).choices[0].text  # type: ignore[call-overload]
        for s in (1, 2, 3)
    }
    assert a == b
    assert len(others | {a}) > 1


def test_logprobs_for_chat(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="m",
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert len(lp.content) == 5
    first = lp.content[0]
    assert first.logprob <= 0
    assert len(first.top_logprobs) == 3
    # Greedy decoding picks the most likely token.
    assert first.top_logprobs[0].token == first.token
    assert "".join(t.token for t in lp.content) == r.choices[0].message.content


def test_logprobs_for_completions(client: OpenAI) -> None:
    r = client.completions.create(
        model="m", prompt="1, 2, 3,", max_tokens=3, temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.top_logprobs is not None
    assert len(lp.tokens) == 3 and all(len(t) == 2 for t in lp.top_logprobs)


def test_json_schema_response_format(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="m",
        max_tokens=40,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        },
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == {"city"} and isinstance(data["city"], str)


def test_n_greater_than_one_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", n=2, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "n"


def test_context_overflow_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="m", prompt="word " * 5000, max_tokens=1)
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "context_length_exceeded"


def test_client_disconnect_stops_generation(engine: str) -> None:
    body = {"model": "m", **LONG, "temperature": 0, "stream": True}
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", engine + "/v1/completions", json=body) as resp,
    ):
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        assert health(engine)["active"] == 1
    # 3000 tokens would take tens of seconds; a cancelled one frees the engine at once.
    eventually(
        lambda: health(engine)["active"] == 0,
        timeout=5,
        what="generation to stop after the client left",
    )


def test_full_queue_is_503_with_retry_after(engine: str) -> None:
    body = {"model": "m", **LONG, "temperature": 0, "stream": True}
    stop = threading.Event()
    started: list[int] = []

    def occupy() -> None:
        with (
            httpx.Client(timeout=60) as http,
            http.stream("POST", engine + "/v1/completions", json=body) as resp,
        ):
            started.append(resp.status_code)
            stop.wait(30)

    batch = health(engine)["max_batch"]
    threads = [threading.Thread(target=occupy) for _ in range(batch + 2)]
    try:
        for t in threads[:batch]:
            t.start()
        eventually(lambda: health(engine)["active"] == batch, timeout=10, what="a full batch")
        for t in threads[batch:]:
            t.start()
        eventually(lambda: health(engine)["queued"] == 2, timeout=10, what="two queued")
        r = httpx.post(engine + "/v1/completions", json={**body, "stream": False})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "overloaded_error"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    eventually(
        lambda: health(engine)["active"] == 0 and health(engine)["queued"] == 0,
        timeout=10,
        what="the engine to drain",
    )


def test_client_disconnect_stops_a_non_streaming_generation(engine: str) -> None:
    body = {"model": "m", **LONG, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.0) as http:
        http.post(engine + "/v1/completions", json=body)
    eventually(
        lambda: health(engine)["active"] == 0,
        timeout=5,
        what="generation to stop after the client left",
    )


def test_sigterm_during_a_long_generation_stops_the_engine_promptly(tmp_path: Path) -> None:
    url, proc = start_engine(tmp_path)
    body = {"model": "m", **LONG, "temperature": 0}
    errors: list[BaseException] = []

    def generate() -> None:
        try:
            httpx.post(url + "/v1/completions", json=body, timeout=60)
        except httpx.HTTPError as exc:
            errors.append(exc)

    t = threading.Thread(target=generate)
    t.start()
    try:
        eventually(lambda: health(url)["active"] == 1, timeout=10, what="a running generation")
        proc.terminate()
        # The generation alone would take half a minute; shutdown must not wait for it.
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        t.join(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)


def test_frequency_and_presence_penalties_change_the_answer(client: OpenAI) -> None:
    kw = {"model": "m", "prompt": COUNTING, "max_tokens": 30, "temperature": 0}
    plain = client.completions.create(**kw).choices[0].text  # type: ignore[call-overload]
    freq = client.completions.create(**kw, frequency_penalty=2.0).choices[0].text  # type: ignore[call-overload]
    pres = client.completions.create(**kw, presence_penalty=2.0).choices[0].text  # type: ignore[call-overload]
    # Counting repeats ", " every other token: a strong penalty must break the pattern.
    assert freq != plain and pres != plain
    assert plain.count(",") > freq.count(",")


def test_streamed_completion_reports_usage_last(client: OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="m",
            prompt="One, two,",
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_an_empty_prompt_is_answered_and_holds_no_slot(client: OpenAI, engine: str) -> None:
    # It tokenizes to nothing with this model (which adds no start token): the batched
    # decoder then waited forever, so a batch of them wedged the replica.
    quick = client.with_options(timeout=60)
    batch = health(engine)["max_batch"]
    with ThreadPoolExecutor(batch + 1) as pool:
        answers = list(
            pool.map(
                lambda _: quick.completions.create(model="m", prompt="", max_tokens=5),
                range(batch + 1),
            )
        )
    for r in answers:
        assert r.choices[0].finish_reason in ("stop", "length")
        assert r.usage is not None and r.usage.completion_tokens <= 5
    streamed = list(quick.completions.create(model="m", prompt=[""], max_tokens=5, stream=True))
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    chat = quick.chat.completions.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": ""}]
    )
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert health(engine)["active"] == 0
    r = quick.chat.completions.create(
        model="m",
        max_tokens=20,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "paris" in (r.choices[0].message.content or "").lower()


def test_a_client_leaving_before_its_first_token_frees_its_place(engine: str) -> None:
    body = {"model": "m", **LONG, "temperature": 0, "stream": True}
    stop = threading.Event()

    def occupy() -> None:
        with (
            httpx.Client(timeout=60) as http,
            http.stream("POST", engine + "/v1/completions", json=body) as resp,
        ):
            assert resp.status_code == 200
            stop.wait(30)

    batch = health(engine)["max_batch"]
    threads = [threading.Thread(target=occupy) for _ in range(batch)]
    try:
        for t in threads:
            t.start()
        eventually(lambda: health(engine)["active"] == batch, timeout=10, what="a full batch")
        # A streamed request that can only wait behind the batch: nothing has been
        # generated for it, so no response has started when its client goes.
        raw = json.dumps(body).encode()
        url = httpx.URL(engine)
        with socket.create_connection((url.host, url.port or 80), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nhost: engine\r\n"
                b"content-type: application/json\r\n"
                + f"content-length: {len(raw)}\r\n\r\n".encode()
                + raw
            )
            eventually(lambda: health(engine)["queued"] == 1, timeout=10, what="it to queue")
        # Freed at once, while the batch it waited for still runs (3000 tokens each).
        eventually(
            lambda: health(engine)["queued"] == 0,
            timeout=5,
            what="the abandoned request to leave the queue",
        )
        assert health(engine)["active"] == batch
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    eventually(lambda: health(engine)["active"] == 0, timeout=10, what="the engine to drain")


class Named:
    """A test executor answering with the names of the tools a request offers, or with
    its prompt; ``hold`` makes a step hang, as a wedged model call would."""

    max_batch = 1

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def step(self, active: list[Sequence]) -> list[Sequence]:
        self.entered.set()
        self.hold.wait(30)
        for seq in active:
            r = seq.request
            names = [t["function"]["name"] for t in r.tools]
            seq.emit(Delta(text=",".join(names) if names else r.prompt, finish_reason="stop"))
        return list(active)


class SchedulerEngine:
    """A test engine: the real scheduler around a test executor, served in process."""

    model_id = "scripted"

    def __init__(self, executor: Named, capabilities: Capabilities, stall_after_s: float) -> None:
        self.capabilities = capabilities
        self.scheduler = Scheduler(executor, max_queue=4, stall_after_s=stall_after_s)

    async def start(self) -> None:
        await self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.close()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        async for delta in self.scheduler.submit(request).deltas():
            yield delta

    def health(self) -> dict[str, Any]:
        return self.scheduler.health()


async def in_process(
    executor: Named, capabilities: Capabilities = Capabilities(), stall_after_s: float = 120.0
) -> tuple[SchedulerEngine, httpx.AsyncClient]:
    engine = SchedulerEngine(executor, capabilities, stall_after_s)
    await engine.start()  # the ASGI transport runs no lifespan
    transport = httpx.ASGITransport(app=create_engine_app(engine))
    return engine, httpx.AsyncClient(transport=transport, base_url="http://engine", timeout=30)


async def test_a_stalled_model_thread_fails_health_with_a_reason() -> None:
    ex = Named()
    engine, http = await in_process(ex, stall_after_s=0.2)
    try:
        assert (await http.get("/health")).status_code == 200
        ex.hold.clear()
        pending = asyncio.ensure_future(
            http.post("/v1/completions", json={"model": "m", "prompt": "hello"})
        )
        assert await asyncio.to_thread(ex.entered.wait, 5)
        await until(lambda: engine.scheduler.problem() is not None, "the watchdog")
        r = await http.get("/health")
        # Non-200 is what the local runtime restarts a replica on.
        assert r.status_code == 503
        assert r.json()["status"] == "stalled" and "no progress" in r.json()["reason"]
        refused = await http.post("/v1/completions", json={"model": "m", "prompt": "more"})
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "overloaded_error"
        ex.hold.set()
        answer = await pending
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"] == "hello"
        assert (await http.get("/health")).status_code == 200
    finally:
        ex.hold.set()
        await http.aclose()
        await engine.close()


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_request_that_needs_a_tool_call_is_refused(client: OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=ask, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == "tools" and "tools" in info.value.body["message"]
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=ask, tool_choice="required")  # type: ignore[arg-type]
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "tool_choice"
    # Asking for no tool call is something this engine can honour.
    r = client.chat.completions.create(
        model="m",
        messages=ask,  # type: ignore[arg-type]
        tools=[],
        tool_choice="none",
        max_tokens=3,
    )
    assert r.choices[0].message.content


async def test_an_engine_that_supports_tools_receives_them() -> None:
    engine, http = await in_process(Named(), Capabilities(tools=True))
    client = AsyncOpenAI(base_url="http://engine/v1", api_key="unused", http_client=http)
    try:
        r = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="auto",
        )
        assert r.choices[0].message.content == "get_weather"
    finally:
        await client.close()
        await engine.close()
