"""Sliding-window counting, shared by both backends (Redis runs the same steps in Lua).

Time is cut into fixed windows of ``window`` length (window ``n`` covers
``[n*window, (n+1)*window)``); a counter keeps the total of the current window and of
the previous one. The count "over the last ``window``" is estimated by assuming the
previous window's total was spread evenly across it::

    count = previous * (window - elapsed) / window + current

This is the approximation Cloudflare and nginx-style limiters use: two numbers per key,
no per-request log, and unlike a plain fixed window it does not allow a burst of twice
the limit around a window boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelplane.values import value


@value
class Window:
    """What a counter says after an increment."""

    count: int
    """Estimated total over the last window, this increment included if allowed
    (rounded up, so ``limit - count`` never overstates what is left)."""
    reset_s: float
    """Seconds until the current fixed window ends; the count starts to fall then."""
    allowed: bool = True
    """False when a ``limit`` was given and the amount did not fit (nothing was added)."""
    retry_after_s: float = 0.0
    """When refused: seconds until the amount would fit if nothing else were added;
    ``math.inf`` when the amount alone exceeds the limit. 0.0 when allowed."""


@dataclass(slots=True)
class State:
    """One counter: window length, index of the current window, the two totals."""

    window: float
    index: int
    current: int = 0
    previous: int = 0


def roll(state: State | None, window: float, now: float) -> State:
    """The counter as of ``now``: the current window becomes the previous one when
    time has moved into the next window, and both are dropped after two."""
    index = math.floor(now / window)
    if state is None or state.window != window or state.index < index - 1:
        return State(window, index)
    if state.index == index - 1:
        return State(window, index, 0, state.current)
    return state


def admit(
    previous: int, current: int, elapsed: float, window: float, amount: int, limit: int | None
) -> bool:
    # The module docstring's ``count``, written out here and in ``result`` rather than
    # called: both run for every counter of every request.
    return limit is None or previous * (window - elapsed) / window + current + amount <= limit


def result(
    previous: int,
    current: int,
    elapsed: float,
    window: float,
    amount: int,
    limit: int | None,
    allowed: bool,
) -> Window:
    """The :class:`Window` for a counter whose totals (after the increment, if it was
    allowed) are ``previous`` and ``current``, ``elapsed`` into the current window."""
    count = math.ceil(previous * (window - elapsed) / window + current - 1e-9)
    reset = window - elapsed
    if allowed or limit is None:
        return Window(count, reset)
    return Window(
        count, reset, False, _retry_after(previous, current, elapsed, window, limit - amount)
    )


def _retry_after(previous: int, current: int, elapsed: float, window: float, room: int) -> float:
    """Time until the estimate falls to ``room`` with nothing added. Within the current
    window only the previous total decays; after it, the current total decays in turn."""
    if room < 0:
        return math.inf
    if current <= room:
        if previous == 0:  # cannot happen for a refused amount; guards the division
            return 0.0
        return max(0.0, (window - elapsed) - (room - current) * window / previous)
    return (window - elapsed) + window - room * window / current
