"""Prometheus metrics of the gateway and the control plane, served at ``/metrics``.

One :class:`Metrics` per server process. What each ``/v1`` request adds (``request``)
is kept in plain Python first, a few additions and list appends per request, and
written to the Prometheus metrics in batches: every :data:`FLUSH_EVERY` requests, once
a second (``flush``, from the gauges' loop) and before ``/metrics`` renders. Writing
each request through prometheus_client as it ended cost the gateway ~17 µs a request,
a batch costs a fraction of that (bench/README.md). The labelled children are bound
once per label set and kept (``.labels()`` itself costs microseconds).

Label values are bounded. Endpoint, route and team names are the only names used, and
only names that exist in the current tables (the caller resolves them; anything else is
``_other``); past :data:`MAX_VALUES` distinct values of one label, new ones count under
``_other`` too. Keys, users and prompts are never labels. ``_other`` and ``_none`` (no
endpoint answered, no team) cannot collide with a name: names start with a letter or a
digit.

With ``modelplane serve --workers N`` every worker writes its samples to files in
``$PROMETHEUS_MULTIPROC_DIR`` (``serve`` points it into ``$MODELPLANE_HOME`` and empties
it before the workers start), and ``/metrics`` of any worker adds up all of them
(prometheus_client's multiprocess mode). prometheus_client chooses that mode when it is
imported, from the environment, which is why the variable must be set before the
workers start rather than by them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "_other"
NONE = "_none"
MAX_VALUES = 200
"""Distinct values one label may take in one process; more count under ``_other``."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
FLUSH_EVERY = 256
"""Requests kept in plain Python at most before they are written to the metrics."""

GaugeMode = Literal["livesum", "mostrecent", "livemostrecent"]


class Bounded:
    """One label's values: the first ``cap`` distinct ones pass, later ones are
    ``_other``. (Values were already checked against the tables by the caller.)"""

    __slots__ = ("cap", "seen")

    def __init__(self, cap: int = MAX_VALUES) -> None:
        self.cap = cap
        self.seen: set[str] = {OTHER, NONE}

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        if value in self.seen:
            return value
        if len(self.seen) - 2 >= self.cap:
            return OTHER
        self.seen.add(value)
        return value


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when this process runs in it."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: os.PathLike[str] | str) -> None:
    """Empty (or create) the directory the workers of one ``serve`` share; call it
    before they start, and set :data:`MULTIPROC_ENV` to it."""
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


class Registry:
    """Where metrics are registered and how ``/metrics`` renders them: this process's
    own registry, or in multiprocess mode every worker's files added up."""

    def __init__(self) -> None:
        # ``*_created`` series double the output and no dashboard here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.path = multiprocess_dir()
        self.exposed = CollectorRegistry(auto_describe=True)
        if self.path is not None:
            MultiProcessCollector(self.exposed, self.path)  # type: ignore[no-untyped-call]
            # Metrics write to files; registering them too would count them twice.
            self.own: CollectorRegistry | None = None
        else:
            self.own = self.exposed

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        return Counter(name, doc, tuple(labels), registry=self.own)

    def gauge(
        self, name: str, doc: str, labels: Iterable[str] = (), mode: GaugeMode = "livesum"
    ) -> Gauge:
        return Gauge(name, doc, tuple(labels), registry=self.own, multiprocess_mode=mode)

    def histogram(
        self, name: str, doc: str, labels: Iterable[str], buckets: Iterable[float]
    ) -> Histogram:
        return Histogram(name, doc, tuple(labels), registry=self.own, buckets=tuple(buckets))

    def render(self) -> bytes:
        return generate_latest(self.exposed)

    def forget_dead(self) -> None:
        """Drop the live gauges (in-flight, queued) of workers that are gone."""
        if self.path is None:
            return
        for name in glob.glob(os.path.join(self.path, "gauge_live*_*.db")):
            found = re.search(r"_(\d+)\.db$", name)
            if found is None:
                continue
            pid = int(found.group(1))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]
            except PermissionError:
                pass


class _Series:
    """The requests of one (kind, route, endpoint, team) since the last flush, in plain
    Python, and the Prometheus children they are written to."""

    __slots__ = (
        "completion",
        "completion_child",
        "duration",
        "durations",
        "key",
        "prompt",
        "prompt_child",
        "requests",
        "status_children",
        "statuses",
        "tpot",
        "tpots",
        "ttft",
        "ttfts",
    )

    def __init__(self, m: Metrics, kind: str, route: str, endpoint: str, team: str) -> None:
        self.key = (kind, route, endpoint, team)
        self.requests = m.requests
        self.status_children: dict[int, Counter] = {}
        self.duration = m.duration.labels(kind, endpoint)
        self.ttft = m.ttft.labels(endpoint)
        self.tpot = m.tpot.labels(endpoint)
        self.prompt_child = m.tokens.labels(endpoint, team, "prompt")
        self.completion_child = m.tokens.labels(endpoint, team, "completion")
        self.statuses: dict[int, int] = {}
        self.durations: list[float] = []
        self.ttfts: list[float] = []
        self.tpots: list[float] = []
        self.prompt = self.completion = 0

    def flush(self) -> None:
        for code, n in self.statuses.items():
            child = self.status_children.get(code)
            if child is None:
                child = self.status_children[code] = self.requests.labels(*self.key, str(code))
            child.inc(n)
        self.statuses.clear()
        for values, histogram in (
            (self.durations, self.duration),
            (self.ttfts, self.ttft),
            (self.tpots, self.tpot),
        ):
            for v in values:
                histogram.observe(v)
            values.clear()
        if self.prompt:
            self.prompt_child.inc(self.prompt)
            self.prompt = 0
        if self.completion:
            self.completion_child.inc(self.completion)
            self.completion = 0


class Metrics:
    """Every metric of a server process; see docs/observability.md for the list."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter(
            "modelplane_requests",
            "Requests to /v1 by kind, route (the public model name), the endpoint that "
            "answered, the caller's team and HTTP status",
            ("kind", "route", "endpoint", "team", "status"),
        )
        self.duration = r.histogram(
            "modelplane_request_duration_seconds",
            "From a request's arrival to the end of its answer (a stream's last byte)",
            ("kind", "endpoint"),
            LATENCY_BUCKETS,
        )
        self.ttft = r.histogram(
            "modelplane_ttft_seconds",
            "Time to first token of streamed answers: arrival to the first chunk",
            ("endpoint",),
            TTFT_BUCKETS,
        )
        self.tpot = r.histogram(
            "modelplane_time_per_output_token_seconds",
            "Time per output token of streamed answers after the first",
            ("endpoint",),
            TPOT_BUCKETS,
        )
        self.tokens = r.counter(
            "modelplane_tokens",
            "Tokens by type (prompt, completion), as the answers' usage reports them "
            "(answers without usage: estimated as their usage records are)",
            ("endpoint", "team", "type"),
        )
        self.inflight = r.gauge("modelplane_inflight_requests", "Requests being served")
        self.queue_waiting = r.gauge(
            "modelplane_queue_waiting",
            "Requests waiting in the gateway for a free replica slot (options.queue)",
            ("endpoint",),
        )
        self.cache = r.counter(
            "modelplane_cache_requests",
            "Response cache lookups by route and result (hit, miss)",
            ("route", "result"),
        )
        self.rate_limited = r.counter(
            "modelplane_rate_limited",
            "Requests refused by a rate limit (429 rate_limit_exceeded)",
            ("route", "team"),
        )
        self.budget_refused = r.counter(
            "modelplane_budget_refused",
            "Requests refused because a hard budget is spent (429 insufficient_quota)",
            ("route", "team"),
        )
        self.upstream_errors = r.counter(
            "modelplane_upstream_errors",
            "Failed attempts at an upstream, by kind (connect, timeout, 5xx, 429, context_length)",
            ("endpoint", "kind"),
        )
        self.retries = r.counter(
            "modelplane_retries", "Retries on the same endpoint after a failure", ("endpoint",)
        )
        self.fallbacks = r.counter(
            "modelplane_fallbacks",
            "Fallbacks taken: a route's next endpoint tried after the previous one failed",
            ("route", "endpoint"),
        )
        self.replica_ready = r.gauge(
            "modelplane_replica_ready",
            "Ready replicas of each local endpoint (an external endpoint with a health "
            "check: 1 while it passes, else 0)",
            ("endpoint",),
            mode="mostrecent",
        )
        self.replica_desired = r.gauge(
            "modelplane_replica_desired",
            "Replicas each local endpoint should have (1 for a health-checked external one)",
            ("endpoint",),
            mode="mostrecent",
        )
        self.replica_restarts = r.counter(
            "modelplane_replica_restarts",
            "Replica processes restarted after they exited or stopped answering /health",
            ("endpoint",),
        )
        self.budget_used = r.gauge(
            "modelplane_budget_used_ratio",
            "Spend in the current period over the hard budget (the soft one without a "
            "hard one); name is the team's name, or for keys _max: the highest of them",
            ("scope", "name"),
            mode="mostrecent",
        )
        self.routes = Bounded()
        self.endpoints = Bounded()
        self.teams = Bounded()
        self._series: dict[tuple[str, str | None, str | None, str | None], _Series] = {}
        self._bound_series: dict[tuple[str, str, str, str], _Series] = {}
        self._pending = 0
        self._dirty: list[_Series] = []
        """Series with requests since the last flush."""
        self.in_flight = 0
        """Requests being served; ``modelplane_inflight_requests`` at the next flush."""
        self._bound: dict[tuple[object, ...], Counter] = {}
        self._replica_names: set[str] = set()
        self._budget_names: set[tuple[str, str]] = set()
        self._waiting_names: set[str] = set()

    def render(self) -> bytes:
        """The text exposition; call ``flush`` first (on the event loop: this may run
        in a thread)."""
        return self.registry.render()

    def request(
        self,
        kind: str,
        route: str | None,
        endpoint: str | None,
        team: str | None,
        status: int,
        seconds: float,
        ttft: float | None = None,
        completion: int = 0,
        prompt: int = 0,
    ) -> None:
        """One ``/v1`` request ended. ``route``, ``endpoint`` and ``team`` are names from
        the tables (or None); past the cap they count as ``_other``."""
        s = self._series.get((kind, route, endpoint, team))
        if s is None:
            s = self._new_series(kind, route, endpoint, team)
        if not s.durations:
            self._dirty.append(s)
        s.statuses[status] = s.statuses.get(status, 0) + 1
        s.durations.append(seconds)
        if ttft is not None:
            s.ttfts.append(ttft)
            if completion > 1:
                s.tpots.append((seconds - ttft) / (completion - 1))
        s.prompt += prompt
        s.completion += completion
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def _new_series(
        self, kind: str, route: str | None, endpoint: str | None, team: str | None
    ) -> _Series:
        labels = (kind, self.routes(route), self.endpoints(endpoint), self.teams(team))
        s = self._bound_series.get(labels)
        if s is None:
            s = self._bound_series[labels] = _Series(self, *labels)
        if len(self._series) >= 10 * MAX_VALUES:
            self._series.clear()  # names come and go: forget the old ones' shortcuts
        self._series[kind, route, endpoint, team] = s
        return s

    def flush(self) -> None:
        """Write what the requests since the last flush added to the metrics."""
        self._pending = 0
        dirty, self._dirty = self._dirty, []
        for s in dirty:
            s.flush()
        self.inflight.set(self.in_flight)

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (id(metric), *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(*labels)
        return child

    def cache_lookup(self, route: str, hit: bool) -> None:
        self._child(self.cache, self.routes(route), "hit" if hit else "miss").inc()

    def refused(self, budget: bool, route: str | None, team: str | None) -> None:
        metric = self.budget_refused if budget else self.rate_limited
        self._child(metric, self.routes(route), self.teams(team)).inc()

    def upstream_error(self, endpoint: str, kind: str) -> None:
        self._child(self.upstream_errors, self.endpoints(endpoint), kind).inc()

    def retry(self, endpoint: str) -> None:
        self._child(self.retries, self.endpoints(endpoint)).inc()

    def fallback(self, route: str, endpoint: str) -> None:
        self._child(self.fallbacks, self.routes(route), self.endpoints(endpoint)).inc()

    def restarted(self, endpoint: str) -> None:
        """A local replica was restarted (called by the runtime that supervises it)."""
        self._child(self.replica_restarts, self.endpoints(endpoint)).inc()

    def set_replicas(self, state: Mapping[str, tuple[int, int]]) -> None:
        """Ready and desired replicas per endpoint; endpoints no longer listed go to 0."""
        for name in self._replica_names - state.keys():
            self.replica_ready.labels(name).set(0)
            self.replica_desired.labels(name).set(0)
        for name, (ready, desired) in state.items():
            label = self.endpoints(name)
            self.replica_ready.labels(label).set(ready)
            self.replica_desired.labels(label).set(desired)
        self._replica_names = {self.endpoints(n) for n in state}

    def set_waiting(self, waiting: Mapping[str, int]) -> None:
        for name in self._waiting_names - waiting.keys():
            self.queue_waiting.labels(name).set(0)
        for name, n in waiting.items():
            self.queue_waiting.labels(self.endpoints(name)).set(n)
        self._waiting_names = {self.endpoints(n) for n in waiting}

    def set_budgets(self, used: Mapping[tuple[str, str], float]) -> None:
        for scope, name in self._budget_names - used.keys():
            with contextlib.suppress(KeyError):
                self.budget_used.remove(scope, name)
        seen = set()
        for (scope, name), ratio in used.items():
            label = self.teams(name) if scope == "team" else name
            self.budget_used.labels(scope, label).set(ratio)
            seen.add((scope, label))
        self._budget_names = seen
