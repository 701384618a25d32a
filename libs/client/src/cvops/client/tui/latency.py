"""Live serving latency of deployments, from the inference router's Prometheus metrics.

The gateway says whether a deployment is ready; how fast it answers is counted by the router
(``cvops_router_request_duration_seconds`` and ``cvops_router_requests_total``, labelled by
model, i.e. deployment). Two scrapes some seconds apart give the window's request rate, error
share and p50/p95, interpolated within histogram buckets as Prometheus's
``histogram_quantile`` does; the first scrape alone gives the numbers since the router started.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from cvops.client.sdk import CvopsError, Unreachable

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
LATENCY = "cvops_router_request_duration_seconds_bucket"
REQUESTS = "cvops_router_requests_total"


@dataclass
class Scrape:
    """Cumulative counts per deployment at one moment (``at``: monotonic seconds)."""

    at: float
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # le -> count
    requests: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Latency:
    """A deployment's serving numbers over a window (``window_s`` None: since start)."""

    requests: int
    p50_ms: float | None
    p95_ms: float | None
    per_second: float | None
    error_share: float | None
    window_s: float | None


def _is_error(code: str) -> bool:
    """An HTTP status other than 2xx, or a gRPC status other than OK."""
    return not (code.startswith("2") or code == "OK")


def parse_metrics(text: str, at: float) -> Scrape:
    """The router's request counts and latency buckets per deployment, summed over versions
    and protocols."""
    scrape = Scrape(at=at)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        if not line.startswith("cvops_router_"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in (LATENCY, REQUESTS):
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        model = labels.get("model", "")
        value = float(match["value"])
        if match["name"] == LATENCY:
            buckets[model][float(labels.get("le", "+Inf"))] += value
        else:
            scrape.requests[model] = scrape.requests.get(model, 0.0) + value
            if _is_error(labels.get("code", "200")):
                scrape.errors[model] = scrape.errors.get(model, 0.0) + value
    scrape.buckets = {model: dict(b) for model, b in buckets.items()}
    return scrape


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile in seconds of cumulative ``le -> count`` buckets (None: no counts)."""
    edges = sorted(buckets)
    total = buckets.get(math.inf, buckets[edges[-1]] if edges else 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower_edge, lower_count = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):  # beyond the last finite bucket: its edge is all we know
                return lower_edge
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_edge + (edge - lower_edge) * share
        lower_edge, lower_count = edge, count
    return lower_edge


def latency(deployment: str, now: Scrape, before: Scrape | None = None) -> Latency | None:
    """``deployment``'s numbers between two scrapes (or since start); None: never served."""
    current = now.buckets.get(deployment)
    if current is None:
        return None
    window = None
    requests = now.requests.get(deployment, 0.0)
    errors = now.errors.get(deployment, 0.0)
    if before is not None and now.at > before.at:
        old = before.buckets.get(deployment, {})
        current = {le: count - old.get(le, 0.0) for le, count in current.items()}
        requests -= before.requests.get(deployment, 0.0)
        errors -= before.errors.get(deployment, 0.0)
        window = now.at - before.at
    p50, p95 = quantile(0.5, current), quantile(0.95, current)
    return Latency(
        requests=round(requests),
        p50_ms=None if p50 is None else p50 * 1000,
        p95_ms=None if p95 is None else p95 * 1000,
        per_second=None if window is None else requests / window,
        error_share=errors / requests if requests > 0 else None,
        window_s=window,
    )


class RouterMetrics:
    """Reads the router's ``/metrics`` (Prometheus text)."""

    def __init__(self, url: str, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0), transport=transport)

    def scrape(self, at: float) -> Scrape:
        """One scrape, stamped ``at``.

        Raises:
            Unreachable: the router's metrics port does not answer.
            CvopsError: it answered something else than metrics.
        """
        try:
            response = self._http.get(f"{self.url}/metrics")
        except httpx.TransportError as err:
            reason = str(err) or type(err).__name__
            raise Unreachable("the inference router's metrics", self.url, reason) from err
        if response.is_error:
            raise CvopsError(response.status_code, f"http_{response.status_code}", self.url)
        return parse_metrics(response.text, at)

    def close(self) -> None:
        self._http.close()
