"""The scheduler through its real seam: a small executor that echoes the prompt."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelplane.engines.base import Delta, GenerateRequest, SamplingParams
from modelplane.engines.scheduler import Scheduler, Sequence
from modelplane.errors import InvalidRequest, ModelplaneError, Overloaded


class Echo:
    """Emits each word of the prompt as a delta; can be held to fill the queue."""

    max_batch = 1

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.order: list[str] = []
        self.threads: set[int] = set()
        self.loaded = self.unloaded = False

    def load(self) -> None:
        self.loaded = True

    def unload(self) -> None:
        self.unloaded = True

    def step(self, active: list[Sequence]) -> list[Sequence]:
        self.threads.add(threading.get_ident())
        self.entered.set()
        for seq in active:
            self.gate.wait(10)
            prompt = seq.request.prompt
            if prompt == "boom":
                raise InvalidRequest("bad prompt", param="prompt")
            if prompt == "die":
                raise SystemExit  # something no executor should ever do
            self.order.append(prompt)
            words = prompt.split()
            for w in words:
                if seq.cancelled:
                    break
                seq.emit(Delta(text=w))
            seq.emit(Delta(finish_reason="stop", completion_tokens=len(words)))
        return list(active)


def req(prompt: str) -> GenerateRequest:
    return GenerateRequest(kind="completion", params=SamplingParams(), prompt=prompt)


async def collect(seq: Sequence) -> str:
    return "".join([d.text async for d in seq.deltas()])


async def test_requests_are_served_in_arrival_order_on_one_thread() -> None:
    ex = Echo()
    sched = Scheduler(ex, max_queue=8)
    await sched.start()
    try:
        ex.gate.clear()
        seqs = [sched.submit(req(f"r{i} a b")) for i in range(5)]
        ex.gate.set()
        texts = [await collect(s) for s in seqs]
    finally:
        await sched.close()
    assert texts == [f"r{i}ab" for i in range(5)]
    assert ex.order == [f"r{i} a b" for i in range(5)]
    assert len(ex.threads) == 1
    assert ex.loaded and ex.unloaded
    assert sched.served == 5


async def test_a_full_queue_refuses_with_retry_after() -> None:
    ex = Echo()
    sched = Scheduler(ex, max_queue=2)
    await sched.start()
    try:
        ex.gate.clear()
        first = sched.submit(req("one"))
        # Wait until the first is taken off the queue and blocked in the executor.
        assert await asyncio.to_thread(ex.entered.wait, 5)
        queued = [sched.submit(req("two")), sched.submit(req("three"))]
        with pytest.raises(Overloaded) as info:
            sched.submit(req("four"))
        assert info.value.headers() == {"retry-after": "1"}
        ex.gate.set()
        assert [await collect(s) for s in (first, *queued)] == ["one", "two", "three"]
    finally:
        await sched.close()


async def test_errors_reach_their_request_and_the_engine_goes_on() -> None:
    sched = Scheduler(Echo(), max_queue=4)
    await sched.start()
    try:
        with pytest.raises(InvalidRequest):
            await collect(sched.submit(req("boom")))
        assert await collect(sched.submit(req("still fine"))) == "stillfine"
    finally:
        await sched.close()


async def test_a_dead_model_thread_is_reported_and_refuses_work() -> None:
    sched = Scheduler(Echo(), max_queue=4)
    await sched.start()
    seq = sched.submit(req("die"))
    with pytest.raises(ModelplaneError, match="engine failed"):
        await collect(seq)
    assert not sched.alive
    with pytest.raises(Overloaded, match="not running"):
        sched.submit(req("hello"))
    await sched.close()


async def test_waiting_requests_fail_cleanly_at_shutdown() -> None:
    ex = Echo()
    sched = Scheduler(ex, max_queue=4)
    await sched.start()
    ex.gate.clear()
    running = sched.submit(req("a b c"))
    waiting = sched.submit(req("d"))
    assert await asyncio.to_thread(ex.entered.wait, 5)
    closing = asyncio.ensure_future(sched.close())
    with pytest.raises(Overloaded, match="shut down"):
        await collect(waiting)
    ex.gate.set()
    await closing
    # The running one was cancelled at its next token rather than finished.
    assert await collect(running) == ""
