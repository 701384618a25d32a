"""Latency statistics on data whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from cvops.engines.stats import (
    bootstrap_ci,
    coefficient_of_variation,
    is_stable,
    percentile,
    rolling_medians,
    summarize,
)


def test_percentiles_of_one_to_hundred_one():
    data = np.arange(1, 102)  # 1..101: the q-th percentile is exactly 1 + q
    assert percentile(data, 50) == 51
    assert percentile(data, 90) == 91
    assert percentile(data, 99) == 100
    stats = summarize(data)
    assert (stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms) == (51, 91, 96, 100)
    assert stats.mean_ms == 51
    assert stats.n == 101


def test_percentile_interpolates_between_ranks():
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 75) == pytest.approx(32.5)


def test_bootstrap_ci_contains_the_true_mean_and_is_reproducible():
    sample = np.random.default_rng(0).normal(loc=12.0, scale=2.0, size=400)
    low, high = bootstrap_ci(sample, seed=3)
    assert low < 12.0 < high
    assert low < sample.mean() < high
    # width close to the normal-theory interval 2 * 1.96 * sigma / sqrt(n) = 0.392
    assert high - low == pytest.approx(2 * 1.96 * 2.0 / 20, rel=0.2)
    assert bootstrap_ci(sample, seed=3) == (low, high)


def test_bootstrap_covers_the_mean_at_about_95_percent():
    rng = np.random.default_rng(11)
    hits = 0
    for seed in range(100):
        low, high = bootstrap_ci(rng.normal(5.0, 1.0, size=50), resamples=500, seed=seed)
        hits += low < 5.0 < high
    assert 88 <= hits <= 100


def test_coefficient_of_variation():
    assert coefficient_of_variation([2.0, 4.0, 6.0]) == pytest.approx(0.5)  # std 2 / mean 4
    assert coefficient_of_variation([3.0, 3.0, 3.0]) == 0.0
    assert coefficient_of_variation([5.0]) == 0.0
    assert summarize([2.0, 4.0, 6.0]).cv == pytest.approx(0.5)


def test_stability_by_rolling_medians():
    rng = np.random.default_rng(0)
    steady = 10.0 + rng.normal(0, 0.2, size=100)
    steady[::17] = 50.0  # outliers do not move window medians
    assert rolling_medians(steady, 10).shape == (10,)
    assert is_stable(steady, window=10, threshold=0.05)
    drifting = np.linspace(5.0, 20.0, 100)
    assert not is_stable(drifting, window=10, threshold=0.05)
    assert not is_stable(steady[:30], window=10, threshold=0.05, windows=5)  # too few windows


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
