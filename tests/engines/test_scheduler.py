"""The scheduler through its real seam: a small executor that echoes the prompt."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelplane.engines.base import Delta, GenerateRequest, SamplingParams
from modelplane.engines.scheduler import Scheduler, Sequence
from modelplane.errors import InvalidRequest, ModelplaneError, Overloaded
from tests.helpers import until


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


async def test_a_request_abandoned_before_its_first_token_leaves_the_queue_at_once() -> None:
    ex = Echo()
    sched = Scheduler(ex, max_queue=1)
    await sched.start()
    try:
        ex.gate.clear()
        running = sched.submit(req("one"))
        assert await asyncio.to_thread(ex.entered.wait, 5)

        async def consume(prompt: str) -> str:
            return await collect(sched.submit(req(prompt)))

        # The consumer is cancelled while it waits for its first delta, as the engine
        # server cancels a request whose client disconnected.
        abandoned = asyncio.ensure_future(consume("two"))
        await until(lambda: sched.queued == 1, "the second request to queue")
        with pytest.raises(Overloaded):
            sched.submit(req("no room"))
        abandoned.cancel()
        await asyncio.wait({abandoned})
        # Its place is free while the first still runs, not once the first is done.
        assert sched.queued == 0
        after = sched.submit(req("three"))
        ex.gate.set()
        assert [await collect(s) for s in (running, after)] == ["one", "three"]
    finally:
        await sched.close()
    assert ex.order == ["one", "three"]


class Stuck(Echo):
    """An executor whose step hangs until released, as a wedged model call would."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def step(self, active: list[Sequence]) -> list[Sequence]:
        self.entered.set()
        self.release.wait(30)
        return super().step(active)


async def test_a_stalled_model_thread_is_reported_and_refuses_work() -> None:
    ex = Stuck()
    sched = Scheduler(ex, max_queue=4, stall_after_s=0.2)
    await sched.start()
    try:
        assert sched.problem() is None
        seq = sched.submit(req("a b"))
        assert await asyncio.to_thread(ex.entered.wait, 5)
        await until(lambda: sched.problem() is not None, "the watchdog to notice the stall")
        state = sched.health()
        assert state["status"] == "stalled"
        assert "no progress" in state["reason"] and "requests in flight: 1" in state["reason"]
        with pytest.raises(Overloaded, match="stalled"):
            sched.submit(req("more"))
        ex.release.set()
        assert await collect(seq) == "ab"
        # A step that ends is progress: healthy again, and taking work.
        assert sched.health()["status"] == "ok" and "reason" not in sched.health()
        assert await collect(sched.submit(req("c"))) == "c"
    finally:
        ex.release.set()
        await sched.close()
