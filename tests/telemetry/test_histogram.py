"""The fixed-bucket latency histogram behind the dashboard's percentiles."""

from __future__ import annotations

import pytest

from modelplane.telemetry.histogram import BOUNDS, Histogram


def test_quantiles_interpolate_inside_a_bucket_within_the_values_seen() -> None:
    hist = Histogram()
    assert hist.quantile(0.5) is None
    for value in (0.006, 0.007, 0.009, 0.01):  # all in (0.005, 0.01]
        hist.add(value)
    assert hist.quantile(0.5) == pytest.approx(0.0075)
    assert hist.quantile(1.0) == pytest.approx(0.01)
    one = Histogram()
    one.add(1.3)  # (1, 2.5]: one request's percentiles are its own latency
    assert one.quantile(0.5) == one.quantile(0.95) == pytest.approx(1.3)
    slow = Histogram()
    slow.add(75.0)
    slow.add(90.0)  # slower than the last bound
    assert slow.quantile(0.5) == pytest.approx(75.0)
    assert slow.quantile(1.0) == pytest.approx(90.0)
    merged = Histogram()
    merged.merge(hist)
    merged.merge(slow)
    assert merged.counts == {1: 4, len(BOUNDS): 2}
    assert (merged.low, merged.high) == (0.006, 90.0)
