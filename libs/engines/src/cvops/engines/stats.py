"""Latency statistics: percentiles, a seeded bootstrap confidence interval, the distribution-free
confidence interval of a percentile (when a cell has measured enough), stability by CV."""

from __future__ import annotations

import math
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


def quantile_ci_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks ``(l, u)`` of the order statistics bounding the q-th percentile (0..100).

    Distribution-free: the number of samples at or below the true percentile is Binomial(n, q), so
    ``P(x_(l) <= true percentile <= x_(u)) = F(u - 1) - F(l - 1) >= confidence`` with ``l`` and
    ``u`` cutting at most ``(1 - confidence) / 2`` from each tail. ``l == 0`` (``u == n + 1``)
    means that side has no bound yet: too few samples (a p95 needs 72 for a two-sided 95 % CI).
    """
    if n < 1:
        raise ValueError("no samples")
    p = q / 100.0
    if not 0.0 < p < 1.0:
        raise ValueError(f"percentile {q} is not strictly between 0 and 100")
    tail = (1.0 - confidence) / 2.0
    ks, cdf = _binomial_cdf(n, p)
    below = ks[cdf <= tail]  # F(l - 1) <= tail
    low = int(below[-1]) + 1 if below.size else 0
    above = ks[cdf >= 1.0 - tail]  # F(u - 1) >= 1 - tail
    high = int(above[0]) + 1 if above.size else n + 1
    return low, high


def quantile_ci(
    samples: Sequence[float] | np.ndarray, q: float = 95, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free (order-statistic) confidence interval of the q-th percentile.

    A side without enough samples is infinite (``-inf`` low, ``inf`` high).
    """
    data = _as_array(samples)
    low, high = quantile_ci_ranks(data.size, q, confidence)
    kth = [k - 1 for k in (low, high) if 1 <= k <= data.size]
    part = np.partition(data, kth) if kth else data
    return (
        float(part[low - 1]) if low >= 1 else -math.inf,
        float(part[high - 1]) if high <= data.size else math.inf,
    )


def quantile_ci_half_width(
    samples: Sequence[float] | np.ndarray, q: float = 95, confidence: float = 0.95
) -> float:
    """Half the width of the percentile's confidence interval over the percentile itself
    (``inf`` while the interval is unbounded or the percentile is 0)."""
    low, high = quantile_ci(samples, q, confidence)
    centre = percentile(samples, q)
    if not (math.isfinite(low) and math.isfinite(high)) or centre <= 0.0:
        return math.inf
    return (high - low) / 2.0 / centre


def is_settled(
    samples: Sequence[float] | np.ndarray,
    tolerance: float = 0.05,
    q: float = 95,
    confidence: float = 0.95,
) -> bool:
    """True when the q-th percentile's confidence interval is within ``±tolerance`` of it.

    The stopping rule of a benchmark cell: enough samples that the reported p95 is known to a
    few percent, whatever the shape of the latency distribution.
    """
    data = _as_array(samples, allow_empty=True)
    return data.size > 0 and quantile_ci_half_width(data, q, confidence) <= tolerance


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


def _binomial_cdf(n: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """``k`` and ``P(B <= k)`` for B ~ Binomial(n, p), over the k that carry any mass.

    Only ``n p ± 10 sd`` is summed (beyond that the mass is below 1e-20), so a check on a
    cell of 100 000 requests costs microseconds; outside that range the CDF is 0 or 1.
    """
    mean = n * p
    spread = 10.0 * math.sqrt(n * p * (1.0 - p)) + 10.0
    first = max(0, math.floor(mean - spread))
    last = min(n, math.ceil(mean + spread))
    ks = np.arange(first, last + 1)
    log_choose = np.array(
        [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in ks.tolist()]
    )
    pmf = np.exp(log_choose + ks * math.log(p) + (n - ks) * math.log1p(-p))
    cdf = np.cumsum(pmf)
    if last == n:
        cdf[-1] = 1.0  # no rounding short of certainty at the top
    return ks, np.minimum(cdf, 1.0)


def _as_array(samples: Sequence[float] | np.ndarray, allow_empty: bool = False) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float64).ravel()
    if data.size == 0 and not allow_empty:
        raise ValueError("no samples")
    return data
