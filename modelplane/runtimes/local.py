"""The local runtime: each replica is a supervised ``modelplane engine serve`` subprocess.

A supervisor task per replica starts the process on a free port of ``replica_host``
(loopback unless other nodes must reach it), waits for
``/health``, health-checks it while it runs, and restarts it with exponential backoff
when it exits or stops answering. Output goes to ``$MODELPLANE_HOME/logs``; the tail of
that log becomes the replica's ``last_error`` when it dies. Children ask the kernel to
end them when the server dies (``--parent-pid``), so a crash leaves no orphans.

A new generation of an endpoint starts a full new set of replicas beside the old; the
old ones stop once every new one is ready. If that takes longer than the start timeout
the rollout reads ``failed`` and the old ones go on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from modelplane import tasks
from modelplane.engines import registry as engines
from modelplane.engines.spec import Launch, LaunchContext
from modelplane.runtimes.base import (
    EventKind,
    Events,
    Replica,
    ReplicaStatus,
    Rollout,
    Watch,
    wait_ready,
)
from modelplane.store.records import Endpoint

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
LOG_ROTATE_BYTES = 10 * 1024 * 1024
# The server's metrics files (``serve --workers``) are no business of a replica's.
CHILD_ENV_DROPPED = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class _Supervisor:
    def __init__(self, rt: LocalRuntime, ep: Endpoint, index: int) -> None:
        self.rt = rt
        self.ep = ep
        self.replica = Replica(endpoint=ep.name, index=index, generation=ep.generation)
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = rt.home / "logs" / f"{ep.name}-{index}.log"
        rt.events.publish(EventKind.ADDED, self.replica)
        self.task = asyncio.create_task(self._run(), name=f"replica {ep.name}/{index}")

    def command(self, port: int) -> Launch:
        ep = self.ep
        ctx = LaunchContext(
            host=self.rt.replica_host,
            port=port,
            home=str(self.rt.home),
            threads=self.rt.threads_for(ep),
            python=sys.executable,
            parent_pid=os.getpid(),
        )
        return engines.get(ep.engine).command(ep.model, ep.engine_options(), ctx)

    async def _run(self) -> None:
        r = self.replica
        backoff = 0.5
        while True:
            host = self.rt.replica_host
            port = free_port(host)
            r.url = f"http://{_url_host(host)}:{port}"
            self._rotate_log()
            launch = self.command(port)
            env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
            with self.log_path.open("ab") as logf:
                self.proc = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,
                    env={**env, **launch.env},
                )
            r.details["pid"] = self.proc.pid
            self._set(ReplicaStatus.STARTING)
            if await self._wait_ready():
                r.last_error = None
                self._set(ReplicaStatus.READY)
                backoff = 0.5
                await self._watch()
            # Reached when the process died or stopped answering: replace it.
            await self._kill()
            r.last_error = self._why()
            r.restarts += 1
            self._set(ReplicaStatus.FAILED)
            if self.rt.on_restart is not None:
                self.rt.on_restart(r.endpoint)
            log.warning(
                "replica %s/%d failed (%s); restarting in %.1fs",
                r.endpoint,
                r.index,
                r.last_error,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.rt.backoff_max_s)

    def _rotate_log(self) -> None:
        """Keep one previous log; a replica that crash-loops must not fill the disk."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_suffix(".log.1"))

    def _set(self, status: ReplicaStatus) -> None:
        self.replica.status = status
        self.rt.events.publish(EventKind.CHANGED, self.replica)

    def _why(self) -> str:
        rc = self.proc.returncode if self.proc else None
        head = f"exited with code {rc}" if rc is not None else "stopped answering /health"
        tail = _tail(self.log_path)
        return f"{head}: {tail}" if tail else head

    async def _healthy(self) -> bool:
        try:
            resp = await self.rt.http.get(self.replica.url + "/health", timeout=2.0)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait_ready(self) -> bool:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.start_timeout_s
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            while loop.time() < deadline:
                if await self._healthy():
                    return True
                # Wait for the process to die or for the next probe, whichever first.
                await asyncio.wait({exited}, timeout=0.2)
                if exited.done():
                    return False
            return False
        finally:
            exited.cancel()

    async def _watch(self) -> None:
        """Return when the process exits or fails three health checks in a row."""
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        misses = 0
        try:
            while misses < 3:
                await asyncio.wait({exited}, timeout=self.rt.health_interval_s)
                if exited.done():
                    return
                misses = 0 if await self._healthy() else misses + 1
        finally:
            exited.cancel()

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._set(ReplicaStatus.STOPPING)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await asyncio.shield(self._kill())
        self.rt.events.publish(EventKind.REMOVED, self.replica)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class LocalRuntime:
    """Replicas as subprocesses of this process, bound to ``replica_host``."""

    def __init__(
        self,
        *,
        home: Path,
        replica_host: str = "127.0.0.1",
        engine_threads: int = 0,
        start_timeout_s: float = 120.0,
        health_interval_s: float = 2.0,
        backoff_max_s: float = 30.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.home = home
        self.replica_host = replica_host
        """The address replicas bind to and are reached at (``replica_host`` setting)."""
        self.on_restart = on_restart
        """Called with the endpoint's name each time one of its replicas is restarted."""
        self.engine_threads = engine_threads
        self.start_timeout_s = start_timeout_s
        self.health_interval_s = health_interval_s
        self.backoff_max_s = backoff_max_s
        self.http = httpx.AsyncClient()
        self.events = Events()
        self._sups: dict[str, list[_Supervisor]] = {}
        self._retiring: dict[str, list[_Supervisor]] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._rolling: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    supervising = True

    def watch(self) -> Watch:
        return self.events.watch()

    async def wait_ready(self, name: str, count: int = 1) -> None:
        await wait_ready(self, name, count)

    def rollout(self, name: str) -> Rollout | None:
        return self._rollouts.get(name)

    def threads_for(self, ep: Endpoint) -> int:
        if self.engine_threads:
            return self.engine_threads
        return max(1, (os.cpu_count() or 1) // max(1, ep.replicas))

    def endpoints(self) -> set[str]:
        return set(self._sups)

    def replicas(self, name: str) -> list[Replica]:
        sups = self._retiring.get(name, []) + self._sups.get(name, [])
        return [s.replica for s in sups]

    async def apply(self, ep: Endpoint) -> None:
        async with self._lock:
            sups = self._sups.setdefault(ep.name, [])
            if sups and sups[0].ep.generation != ep.generation:
                await self._supersede(ep, sups)
                sups = self._sups[ep.name] = []
            while len(sups) < ep.replicas:
                sups.append(_Supervisor(self, ep, len(sups)))
            while len(sups) > ep.replicas:
                await sups.pop().stop()
            for s in sups:
                s.ep = ep

    async def _supersede(self, ep: Endpoint, current: list[_Supervisor]) -> None:
        """Start a full new set for ``ep``'s generation; the ready replicas of the old
        one serve until the new set is ready (those that never became ready go now)."""
        await tasks.cancel(self._rolling.pop(ep.name, None))
        serving = [s for s in current if s.replica.status == ReplicaStatus.READY]
        await asyncio.gather(*(s.stop() for s in current if s not in serving))
        retiring = self._retiring.setdefault(ep.name, [])
        retiring.extend(serving)
        if not retiring:
            self._rollouts.pop(ep.name, None)
            return
        self._rollouts[ep.name] = Rollout("rolling", ep.generation)
        self._rolling[ep.name] = asyncio.create_task(
            self._retire_when_ready(ep.name, ep.generation), name=f"rollout {ep.name}"
        )

    async def _retire_when_ready(self, name: str, generation: int) -> None:
        """Stop the old replicas once every new one is ready. Past the start timeout
        the rollout is reported failed, and the old ones keep serving while the new
        ones keep trying (a later update replaces them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        with self.watch() as events:
            while not self._rolled(name):
                try:
                    async with asyncio.timeout_at(deadline):
                        await anext(events)
                except TimeoutError:
                    self._rollouts[name] = Rollout("failed", generation, self._why_not(name))
                    log.warning("the rollout of %s to generation %d failed", name, generation)
                    # Followers learn of it with the old replicas, which stay for now.
                    for r in self.replicas(name):
                        self.events.publish(EventKind.CHANGED, r)
                    deadline = float("inf")
        self._rollouts[name] = Rollout("complete", generation)
        self._rolling.pop(name, None)
        old = self._retiring.pop(name, [])
        # Shielded: cancelled by a newer rollout now, these must still stop.
        await asyncio.shield(asyncio.gather(*(s.stop() for s in old)))

    def _rolled(self, name: str) -> bool:
        new = self._sups.get(name, [])
        return not new or all(s.replica.status == ReplicaStatus.READY for s in new)

    def _why_not(self, name: str) -> str:
        new = self._sups.get(name, [])
        ready = sum(s.replica.status == ReplicaStatus.READY for s in new)
        errors = [s.replica.last_error for s in new if s.replica.last_error]
        head = (
            f"{ready} of {len(new)} new replicas ready after "
            f"{self.start_timeout_s:g} s; the previous generation keeps serving"
        )
        return f"{head}; last error: {errors[-1]}" if errors else head

    async def delete(self, name: str) -> None:
        async with self._lock:
            await tasks.cancel(self._rolling.pop(name, None))
            self._rollouts.pop(name, None)
            sups = self._sups.pop(name, []) + self._retiring.pop(name, [])
        await asyncio.gather(*(s.stop() for s in sups))

    async def close(self) -> None:
        for name in list(self._sups) + list(self._retiring):
            await self.delete(name)
        await self.http.aclose()
