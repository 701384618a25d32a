"""Latency statistics on data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvops.engines.stats import (
    bootstrap_ci,
    coefficient_of_variation,
    is_settled,
    is_stable,
    percentile,
    quantile_ci,
    quantile_ci_half_width,
    quantile_ci_ranks,
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


def _binomial_mass(n: int, p: float, first: int, last: int) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(first, last + 1))


def test_order_statistic_ranks_match_the_binomial_tables():
    # the median of 100: x(40)..x(61), the textbook distribution-free 95% interval
    assert quantile_ci_ranks(100, 50) == (40, 61)
    assert quantile_ci_ranks(100, 95) == (90, 100)
    assert quantile_ci_ranks(200, 95) == (184, 197)
    assert quantile_ci_ranks(1000, 95) == (936, 964)
    # 0.95**n <= 0.025 first at n = 72: fewer samples leave the p95 without an upper bound
    assert quantile_ci_ranks(72, 95) == (64, 72)
    assert quantile_ci_ranks(71, 95)[1] == 72
    assert quantile_ci_ranks(5, 50) == (0, 6)  # unbounded both sides


@pytest.mark.parametrize("n", [72, 100, 250, 1000])
def test_order_statistic_interval_covers_at_least_95_percent_exactly(n):
    low, high = quantile_ci_ranks(n, 95)
    coverage = _binomial_mass(n, 0.95, low, high - 1)  # P(l <= B <= u - 1), B ~ Bin(n, .95)
    assert 0.95 <= coverage < 0.99
    # neither end could move inwards and keep 95% (at most 2.5% cut from each tail)
    assert _binomial_mass(n, 0.95, 0, low - 1) <= 0.025
    assert _binomial_mass(n, 0.95, high, n) <= 0.025
    assert _binomial_mass(n, 0.95, 0, low) > 0.025


def test_quantile_ci_of_known_data_and_its_coverage():
    data = np.arange(1.0, 101.0)[::-1]  # order does not matter
    assert quantile_ci(data, 95) == (90.0, 100.0)
    assert quantile_ci(data, 50) == (40.0, 61.0)
    assert quantile_ci(data[:50], 95) == (94.0, math.inf)  # 51..100: x(44), no x(51) yet
    true_p95 = -math.log(0.05)  # of the unit exponential
    rng = np.random.default_rng(5)
    hits = sum(
        low <= true_p95 <= high
        for low, high in (quantile_ci(rng.exponential(size=300), 95) for _ in range(400))
    )
    assert 0.93 * 400 <= hits <= 400


def test_constant_latencies_settle_as_soon_as_the_interval_exists():
    assert not is_settled(np.full(71, 4.0))  # no upper bound yet
    assert is_settled(np.full(72, 4.0))
    assert quantile_ci_half_width(np.full(72, 4.0)) == 0.0
    assert not is_settled([])


def test_bimodal_latencies_never_settle():
    fast_and_slow = np.tile(np.r_[np.full(19, 1.0), 10.0], 500)  # 5% slow: the p95 is in the gap
    assert not is_settled(fast_and_slow[:1000])
    assert not is_settled(fast_and_slow)
    assert quantile_ci_half_width(fast_and_slow) > 1.0


def test_noisy_latencies_settle_once_there_are_enough():
    samples = np.random.default_rng(2).lognormal(mean=1.0, sigma=0.2, size=5000)
    assert not is_settled(samples[:100], tolerance=0.05)
    assert is_settled(samples, tolerance=0.05)
    assert quantile_ci_half_width(samples) < quantile_ci_half_width(samples[:500])
