"""A small fixed-bucket histogram for latencies: O(1) to add to, cheap to merge, and
good enough for the percentiles of a dashboard."""

from __future__ import annotations

from bisect import bisect_left

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the buckets; one more bucket holds everything slower."""


class Histogram:
    """Counts per bucket of :data:`BOUNDS`, with the fastest and slowest value seen.

    The counts are sparse (bucket index → count): the latencies of one endpoint in one
    second fall in a bucket or two, and merging thousands of them is what reading a
    ten-minute window costs."""

    __slots__ = ("counts", "high", "low")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.low = float("inf")
        self.high = 0.0

    def add(self, value: float) -> None:
        i = bisect_left(BOUNDS, value)
        self.counts[i] = self.counts.get(i, 0) + 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for i, n in other.counts.items():
            counts[i] = counts.get(i, 0) + n
        if other.low < self.low:
            self.low = other.low
        if other.high > self.high:
            self.high = other.high

    def quantile(self, q: float) -> float | None:
        """Interpolated linearly inside its bucket, kept within the values seen (one
        request's p95 is its latency); None when empty."""
        rank = q * sum(self.counts.values())
        seen = 0
        for i in sorted(self.counts):
            n = self.counts[i]
            if seen + n >= rank:
                low = BOUNDS[i - 1] if i else 0.0
                high = BOUNDS[i] if i < len(BOUNDS) else self.high
                return min(max(low + (high - low) * (rank - seen) / n, self.low), self.high)
            seen += n
        return None
