"""Passive outlier ejection: a replica that fails several requests in a row sits out a
cooldown, which doubles each time it is ejected again (up to a ceiling) and resets once
it has served successfully after coming back.

Failures are what the gateway sees: connection errors and 5xx answers other than 503
(a full engine queue says "busy", not "broken"). Active checks (``/health``) are the
runtime's job; this catches a replica that answers health checks but fails requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    ejections: int = 0
    until: float = 0.0


class Outliers:
    def __init__(
        self,
        *,
        consecutive: int = 3,
        base_cooldown_s: float = 5.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consecutive = consecutive
        self.base_cooldown_s = base_cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._state: dict[str, _State] = {}

    def ejected(self, url: str) -> bool:
        st = self._state.get(url)
        return st is not None and st.until > self._clock()

    def success(self, url: str) -> None:
        st = self._state.get(url)
        if st is not None and st.until <= self._clock():
            del self._state[url]  # healthy again: forget its history

    def failure(self, url: str) -> bool:
        """Count a failure; True when this one ejected the replica."""
        st = self._state.setdefault(url, _State())
        if st.until > self._clock():
            return False
        st.consecutive += 1
        if st.consecutive < self.consecutive:
            return False
        cooldown = min(self.base_cooldown_s * 2**st.ejections, self.max_cooldown_s)
        st.until = self._clock() + cooldown
        st.ejections += 1
        st.consecutive = 0
        return True

    def cooldown_left(self, url: str) -> float:
        st = self._state.get(url)
        return max(0.0, st.until - self._clock()) if st else 0.0
