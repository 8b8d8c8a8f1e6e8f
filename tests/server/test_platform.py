"""The platform opens its parts in order and closes them all, also when one part fails
to open halfway: nothing it started is left running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelplane.config import Settings
from modelplane.errors import ModelplaneError
from modelplane.server.platform import Platform
from tests.helpers import ADMIN_KEY


def _settings(home: Path, **over: object) -> Settings:
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'modelplane.db'}",
        admin_key=ADMIN_KEY,  # type: ignore[arg-type]
        cache_refresh_interval_s=0.2,
        access_log=False,
        **over,  # type: ignore[arg-type]
    )


def _ours() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


async def test_a_part_that_fails_to_open_closes_those_opened_before_it(tmp_path: Path) -> None:
    before = _ours()
    # The JWKS file is read last of all, after the database, the key cache, the
    # reconciler, the watcher, governance and the proxy have started their tasks.
    missing = tmp_path / "no-such-jwks.json"
    settings = _settings(tmp_path, jwt={"issuer": "https://id.example", "jwks_file": missing})
    with pytest.raises(ModelplaneError, match="JWKS"):
        await Platform.open(settings)
    await asyncio.sleep(0)  # let cancelled tasks finish their last step
    left = {t.get_name() for t in _ours() - before}
    assert left == set(), f"still running after a failed open: {sorted(left)}"


async def test_close_stops_everything_open_started(tmp_path: Path) -> None:
    before = _ours()
    platform = await Platform.open(_settings(tmp_path))
    started = {t.get_name() for t in _ours() - before}
    assert {"revision watcher", "reconciler"} <= started
    await platform.close()
    await asyncio.sleep(0)
    assert {t.get_name() for t in _ours() - before} == set()
