"""The runtime contract: every runtime (``conftest.harness``) converges on endpoints,
rolls without a gap, restarts what crashes and tells every change through ``watch()``."""

from __future__ import annotations

import dataclasses

from modelplane.runtimes.base import EventKind, ReplicaStatus
from tests.runtimes.contract import (
    READY,
    Harness,
    crash,
    endpoint,
    health,
    ready,
    removed,
    statuses,
    told,
    until,
)


async def test_apply_starts_replicas_that_answer_and_watch_tells_each_step(
    harness: Harness,
) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=2)
    ids = {f"{ep.name}-1-0", f"{ep.name}-1-1"}
    with rt.watch() as events:
        await rt.apply(ep)
        seen = await told(
            events,
            lambda seen: {e.replica.id for e in seen if e.replica.status == READY} == ids,
            "both ready",
        )
    reps = rt.replicas(ep.name)
    assert sorted(r.id for r in reps) == [f"{ep.name}-1-0", f"{ep.name}-1-1"]
    for r in reps:
        assert r.url == f"http://{r.host}:{r.port}"
        assert await health(r.url) == 200
        steps = statuses(seen, r.id)
        assert steps[0] == "added:pending" and steps[-1] == "changed:ready", steps
    assert harness.processes() == 2
    assert ep.name in rt.endpoints()


async def test_scale_up_then_down(harness: Harness) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=1)
    with rt.watch() as events:
        await rt.apply(ep)
        await ready(rt, events, ep.name, 1)
        first = rt.replicas(ep.name)[0]
        await rt.apply(dataclasses.replace(ep, replicas=3))
        await ready(rt, events, ep.name, 3)
        assert harness.processes() == 3
        # Scaling keeps the generation: the first replica was never touched.
        assert rt.replicas(ep.name)[0].id == first.id
        assert rt.replicas(ep.name)[0].details == first.details
        await rt.apply(dataclasses.replace(ep, replicas=1))
        gone = {f"{ep.name}-1-1", f"{ep.name}-1-2"}
        await told(events, lambda seen: removed(seen) == gone, "two removed")
    assert [r.id for r in rt.replicas(ep.name)] == [first.id]
    assert harness.processes() == 1


async def test_a_new_generation_replaces_the_old_with_no_gap(harness: Harness) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=2)
    with rt.watch() as events:
        await rt.apply(ep)
        await ready(rt, events, ep.name, 2)
        await rt.apply(dataclasses.replace(ep, generation=2, options={"tag": "v2"}))
        old = {f"{ep.name}-1-0", f"{ep.name}-1-1"}
        seen = await told(events, lambda seen: removed(seen) == old, "generation 1 removed")
    # Replayed from the events, in order: some replica was ready at every moment.
    state = {f"{ep.name}-1-0": READY, f"{ep.name}-1-1": READY}
    for e in seen:
        if e.kind == EventKind.REMOVED:
            state.pop(e.replica.id, None)
        else:
            state[e.replica.id] = e.replica.status
        assert READY in state.values(), f"no ready replica after {e}"
    assert sorted(state) == [f"{ep.name}-2-0", f"{ep.name}-2-1"]
    assert [r.status for r in rt.replicas(ep.name)] == [READY, READY]
    assert harness.processes() == 2
    rollout = rt.rollout(ep.name)
    assert rollout is not None and rollout.status == "complete" and rollout.generation == 2


async def test_a_rollout_that_never_becomes_ready_keeps_the_old_replicas_serving(
    harness: Harness,
) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=1)
    with rt.watch() as events:
        await rt.apply(ep)
        await ready(rt, events, ep.name, 1)
        old = rt.replicas(ep.name)[0]
        await rt.apply(dataclasses.replace(ep, generation=2, options={"fail": True}))
        await until(
            events,
            lambda: (ro := rt.rollout(ep.name)) is not None and ro.status == "failed",
            "the rollout to fail",
        )
        rollout = rt.rollout(ep.name)
        assert rollout is not None and rollout.generation == 2
        assert "asked to fail" in (rollout.reason or ""), rollout
        # The old replica still serves, and is still listed as ready.
        assert await health(old.url) == 200
        assert [r.id for r in rt.replicas(ep.name) if r.status == READY] == [old.id]
        # A later good update completes a rollout and retires generation 1.
        await rt.apply(dataclasses.replace(ep, generation=3, options={"tag": "v3"}))
        await told(events, lambda seen: old.id in removed(seen), "generation 1 removed")
    assert [(r.generation, r.status) for r in rt.replicas(ep.name)] == [(3, READY)]
    rollout = rt.rollout(ep.name)
    assert rollout is not None and (rollout.status, rollout.generation) == ("complete", 3)
    assert harness.processes() == 1


async def test_delete_stops_every_replica(harness: Harness) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=2)
    with rt.watch() as events:
        await rt.apply(ep)
        await ready(rt, events, ep.name, 2)
        ids = {r.id for r in rt.replicas(ep.name)}
        await rt.delete(ep.name)
        # delete returns once they are gone, and so are their processes.
        assert not rt.replicas(ep.name) and ep.name not in rt.endpoints()
        assert harness.processes() == 0
        await told(events, lambda seen: removed(seen) == ids, "both removed")


async def test_a_crashed_replica_is_restarted_and_counted(harness: Harness) -> None:
    rt = harness.runtime()
    ep = endpoint(replicas=1)
    with rt.watch() as events:
        await rt.apply(ep)
        await ready(rt, events, ep.name, 1)
        before = rt.replicas(ep.name)[0]
        await crash(before.url)
        seen = await until(
            events,
            lambda: (r := rt.replicas(ep.name)[0]).status == READY and r.restarts == 1,
            "the replica back, restarted once",
        )
    after = rt.replicas(ep.name)[0]
    assert after.id == before.id
    steps = statuses(seen, before.id)
    assert "changed:failed" in steps and steps[-1] == "changed:ready", steps
    failed = next(e.replica for e in seen if e.replica.status == ReplicaStatus.FAILED)
    assert failed.restarts == 1 and "exited with code 1" in (failed.last_error or "")
    assert await health(after.url) == 200
    assert harness.processes() == 1


async def test_reapplying_and_a_new_instance_converge_without_duplicates(
    harness: Harness,
) -> None:
    ep = endpoint(replicas=2)
    first = harness.runtime()
    with first.watch() as events:
        await first.apply(ep)
        await ready(first, events, ep.name, 2)
        ids = sorted(r.id for r in first.replicas(ep.name))
        await first.apply(ep)
        await first.apply(ep)
    assert sorted(r.id for r in first.replicas(ep.name)) == ids
    assert harness.processes() == 2
    await first.close()
    assert harness.processes() == 0
    # A restarted server: a new instance, given the same endpoint.
    second = harness.runtime()
    with second.watch() as events:
        await second.apply(ep)
        await second.apply(ep)
        await ready(second, events, ep.name, 2)
    assert sorted(r.id for r in second.replicas(ep.name)) == ids
    assert harness.processes() == 2


async def test_wait_ready_returns_once_enough_are_ready(harness: Harness) -> None:
    import asyncio

    rt = harness.runtime()
    ep = endpoint(replicas=2)
    await rt.apply(ep)
    async with asyncio.timeout(20):
        await rt.wait_ready(ep.name, 2)
    assert sum(r.status == READY for r in rt.replicas(ep.name)) == 2
