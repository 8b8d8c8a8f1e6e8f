"""The runtime contract runs once per runtime: ``local`` and ``local-shared`` (one
process, which supervises). A Kubernetes runtime adds its harness here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelplane.config import Settings
from modelplane.runtimes import registry as runtimes
from tests.runtimes import echo_spec
from tests.runtimes.contract import Harness


@pytest.fixture(autouse=True, scope="session")
def _echo_engine() -> None:
    echo_spec.register()


@pytest.fixture(params=["local", "local-shared"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(
        home=home,
        replica_start_timeout_s=3.0,
        health_interval_s=0.2,
        restart_backoff_max_s=0.5,
        engine_threads=1,
    )
    h = Harness(
        request.param,
        make=lambda: runtimes.create(request.param, settings=settings),
        processes=lambda: len(echo_spec.echo_pids(home)),
    )
    try:
        yield h
    finally:
        for rt in h.made:
            await rt.close()
        assert h.processes() == 0, "replica processes outlived their runtime"
