"""Latency statistics: percentiles, a seeded bootstrap confidence interval, stability by CV."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import numpy as np

PERCENTILES = (50, 90, 95, 99)


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Summary of per-request latencies in milliseconds."""

    n: int
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    ci95_low_ms: float  # 95% bootstrap confidence interval of the mean
    ci95_high_ms: float
    cv: float  # coefficient of variation, std / mean


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    data = _as_array(samples)
    return float(np.percentile(data, q, method="linear"))


def coefficient_of_variation(samples: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation over the mean; 0 for fewer than two samples or a zero mean."""
    data = _as_array(samples)
    if data.size < 2:
        return 0.0
    mean = float(data.mean())
    if mean == 0.0:
        return 0.0
    return float(data.std(ddof=1) / abs(mean))


def bootstrap_ci(
    samples: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` (default: the mean).

    ``statistic`` takes a ``(resamples, n)`` array and reduces along axis 1. The generator is
    seeded, so the same samples always give the same interval.
    """
    data = _as_array(samples)
    if data.size == 1:
        return float(data[0]), float(data[0])
    reduce = statistic or (lambda a: a.mean(axis=1))
    rng = np.random.default_rng(seed)
    estimates = []
    chunk = max(1, min(resamples, 2_000_000 // data.size))  # bound memory on long runs
    done = 0
    while done < resamples:
        take = min(chunk, resamples - done)
        picks = rng.integers(0, data.size, size=(take, data.size))
        estimates.append(np.asarray(reduce(data[picks])))
        done += take
    values = np.concatenate(estimates)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def rolling_medians(samples: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Medians of consecutive, non-overlapping windows of ``window`` samples (a partial tail is
    dropped)."""
    data = _as_array(samples, allow_empty=True)
    whole = data.size // window
    if whole == 0:
        return np.empty(0)
    return np.median(data[: whole * window].reshape(whole, window), axis=1)


def is_stable(
    samples: Sequence[float] | np.ndarray,
    window: int = 10,
    threshold: float = 0.05,
    windows: int = 5,
) -> bool:
    """True when the CV of the last ``windows`` window medians is below ``threshold``.

    Medians shrug off single outliers (a GC pause, a context switch) while a drifting mean
    (thermal throttling, a noisy neighbour warming up) keeps the CV high.
    """
    medians = rolling_medians(samples, window)
    if medians.size < windows:
        return False
    return coefficient_of_variation(medians[-windows:]) < threshold


def summarize(samples_ms: Sequence[float] | np.ndarray, seed: int = 0) -> LatencyStats:
    """Mean, spread, percentiles and the bootstrap CI of the mean of latencies in ms."""
    data = _as_array(samples_ms)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, PERCENTILES, method="linear"))
    low, high = bootstrap_ci(data, seed=seed)
    return LatencyStats(
        n=int(data.size),
        mean_ms=float(data.mean()),
        std_ms=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        ci95_low_ms=low,
        ci95_high_ms=high,
        cv=coefficient_of_variation(data),
    )


def _as_array(samples: Sequence[float] | np.ndarray, allow_empty: bool = False) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float64).ravel()
    if data.size == 0 and not allow_empty:
        raise ValueError("no samples")
    return data
