"""Fixtures shared by the provider tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.providers.base import Closable


@pytest.fixture(autouse=True)
async def _close_shared_provider(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A provider owns its connections: a module's shared ``PROVIDER`` closes them after
    each test (and opens new ones when the next test uses it)."""
    yield
    provider = getattr(request.module, "PROVIDER", None)
    if isinstance(provider, Closable):
        await provider.close()
