"""Pick an engine from benchmark rows: the Pareto front of latency x throughput x accuracy, the
pick under a service-level agreement with its reason, and dynamic-batcher advice. Pure."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from msgspec.structs import replace

from cvops.engines.measurement import BenchmarkRow

REFERENCE_ENGINE = ("torch-eager", "fp32")
_MIN_BATCH_GAIN = 1.05  # a larger batch is preferred only if it buys 5% more throughput
_UNSETTLED = "its p95 did not settle within the time cap (not stable): measure it longer"


class BatcherAdvice(msgspec.Struct, frozen=True, kw_only=True):
    """What a Triton dynamic batcher should use for the picked engine."""

    preferred_batch_sizes: list[int]
    max_batch_size: int
    max_queue_delay_us: int
    reason: str


class Recommendation(msgspec.Struct, frozen=True, kw_only=True):
    """The pick (None when nothing meets the SLA), the reason, the front, the closest miss."""

    pick: BenchmarkRow | None
    met_sla: bool
    reason: str
    pareto: list[BenchmarkRow]
    closest: BenchmarkRow | None = None
    batcher: BatcherAdvice | None = None
    p95_ms: float | None = None
    max_accuracy_drop: float | None = None
    reference_accuracy: float | None = None


def pareto_front(rows: Sequence[BenchmarkRow]) -> list[BenchmarkRow]:
    """Measured rows no other row beats on p95 latency, throughput and accuracy at once.

    An unknown accuracy counts as worse than any known one. Order: highest throughput first.
    """
    measured = [r for r in rows if _measured(r)]
    front = [r for r in measured if not any(_dominates(o, r) for o in measured if o is not r)]
    return sorted(front, key=lambda r: (-_thr(r), _p95(r), r.engine, r.batch_size, r.concurrency))


def recommend(
    rows: Sequence[BenchmarkRow],
    p95_ms: float | None = None,
    max_accuracy_drop: float | None = None,
    reference_accuracy: float | None = None,
) -> Recommendation:
    """The highest-throughput row whose p95 and accuracy drop meet the SLA.

    Under a p95 SLA, stable rows (their p95 is known to a few percent) are preferred to rows
    whose p95 did not settle, and the Pareto front returned is then the stable rows' front (so
    the pick is on it); an unstable pick or closest miss says so in the reason.

    Args:
        rows: the sweep's rows (failed rows are ignored).
        p95_ms: latency SLA on the 95th percentile per request, in ms.
        max_accuracy_drop: the most accuracy (points) the pick may lose against the reference.
        reference_accuracy: the source model's accuracy (fraction); default: the torch-eager FP32
            rows' accuracy, else the best accuracy measured.

    Returns:
        A ``Recommendation``. When nothing meets the SLA, ``pick`` is None, ``met_sla`` False and
        ``closest`` the row that misses by the least.
    """
    measured = [r for r in rows if _measured(r)]
    front = pareto_front(measured)
    reference = reference_accuracy if reference_accuracy is not None else _reference(measured)
    sla = _sla_text(p95_ms, max_accuracy_drop)
    base = Recommendation(
        pick=None,
        met_sla=False,
        reason="",
        pareto=front,
        p95_ms=p95_ms,
        max_accuracy_drop=max_accuracy_drop,
        reference_accuracy=reference,
    )
    if not measured:
        failed = sorted({f"{r.engine}/{r.precision}: {r.error}" for r in rows if r.error})
        why = "; ".join(failed) if failed else "no rows"
        return replace(base, reason=f"no engine completed a measurement ({why})")

    def drop(row: BenchmarkRow) -> float | None:
        if row.accuracy is None or reference is None:
            return None
        return (reference - row.accuracy) * 100.0

    def meets(row: BenchmarkRow) -> bool:
        if p95_ms is not None and _p95(row) > p95_ms:
            return False
        if max_accuracy_drop is not None:
            d = drop(row)
            if d is None or d > max_accuracy_drop:
                return False
        return True

    ok = [r for r in measured if meets(r)]
    if ok:
        # under a p95 SLA, a row whose p95 settled beats one whose p95 may yet be over the bound
        settled = [r for r in ok if r.stable] if p95_ms is not None else []
        pool = settled or ok
        pick = min(pool, key=lambda r: (-_thr(r), _p95(r), -(r.accuracy or 0.0), r.engine))
        d = drop(pick)
        acc = "" if pick.accuracy is None else f", accuracy {pick.accuracy * 100:.2f}%"
        acc += "" if d is None else f" (drop {d:.2f} pts)"
        among = f"{len(ok)} of {len(measured)} measured rows meeting {sla}"
        if settled:
            among = f"{len(settled)} stable rows of the {among}"
        reason = f"{_name(pick)}: {_thr(pick):.0f} images/s at p95 {_p95(pick):.2f} ms{acc}; "
        reason += f"the highest throughput of {among}"
        if not pick.stable:
            reason += f"; {_UNSETTLED}"
        advice = batcher_advice(measured, pick, p95_ms)
        front = pareto_front([r for r in measured if r.stable]) if settled else base.pareto
        return replace(base, pick=pick, met_sla=True, reason=reason, batcher=advice, pareto=front)

    def miss(row: BenchmarkRow) -> float:
        over = 0.0
        if p95_ms is not None:
            over += max(0.0, _p95(row) / p95_ms - 1.0)
        if max_accuracy_drop is not None:
            d = drop(row)
            over += (
                1e6 if d is None else max(0.0, d - max_accuracy_drop) / max(max_accuracy_drop, 0.1)
            )
        return over

    closest = min(measured, key=lambda r: (miss(r), -_thr(r), r.engine))
    d = drop(closest)
    parts = [f"p95 {_p95(closest):.2f} ms"]
    if d is not None:
        parts.append(f"accuracy drop {d:.2f} pts")
    reason = f"nothing meets {sla}; closest is {_name(closest)} ({', '.join(parts)})"
    if not closest.stable:
        reason += f"; {_UNSETTLED}"
    return replace(base, reason=reason, closest=closest)


def batcher_advice(
    rows: Sequence[BenchmarkRow], pick: BenchmarkRow, p95_ms: float | None = None
) -> BatcherAdvice:
    """Preferred batch sizes and max queue delay for the picked engine, from its measured rows.

    A batch size is preferred when it meets the latency SLA and raises throughput by at least 5%
    over the next smaller preferred size. The queue delay is the time one batch-1 request takes
    (p50), shrunk to half the slack the SLA leaves at the largest preferred batch.
    """
    same = [
        r
        for r in rows
        if _measured(r)
        and (r.engine, r.precision, r.artifact) == (pick.engine, pick.precision, pick.artifact)
    ]
    best: dict[int, BenchmarkRow] = {}
    for row in same:
        if p95_ms is not None and _p95(row) > p95_ms:
            continue
        if row.batch_size not in best or _thr(row) > _thr(best[row.batch_size]):
            best[row.batch_size] = row
    kept: list[int] = []
    for size in sorted(best):
        if not kept or _thr(best[size]) >= _MIN_BATCH_GAIN * _thr(best[kept[-1]]):
            kept.append(size)
    if not kept:
        kept = [pick.batch_size]
        best[pick.batch_size] = pick
    largest = kept[-1]
    singles = [r for r in same if r.batch_size == 1 and r.p50_ms is not None]
    base_ms = min((r.p50_ms for r in singles if r.p50_ms is not None), default=None)
    if base_ms is None:
        base_ms = (best[largest].p50_ms or 0.0) / max(largest, 1)
    delay_ms = base_ms
    why = f"one batch-1 request takes {base_ms:.3f} ms (p50)"
    if p95_ms is not None:
        slack = max(0.0, p95_ms - _p95(best[largest]))
        if slack / 2.0 < delay_ms:
            delay_ms = slack / 2.0
            why = f"half the {slack:.3f} ms the SLA leaves at batch {largest}"
    preferred = [b for b in kept if b > 1]
    if not preferred:
        return BatcherAdvice(
            preferred_batch_sizes=[],
            max_batch_size=largest,
            max_queue_delay_us=0,
            reason=f"batching does not raise {_name(pick, batch=False)} throughput enough "
            "(>= 5% per step) within the SLA; serve requests as they come",
        )
    gains = ", ".join(f"batch {b}: {_thr(best[b]):.0f} img/s" for b in kept)
    return BatcherAdvice(
        preferred_batch_sizes=preferred,
        max_batch_size=largest,
        max_queue_delay_us=round(delay_ms * 1000.0),
        reason=f"throughput rises with batch ({gains}); queue delay: {why}",
    )


def _measured(row: BenchmarkRow) -> bool:
    return row.error is None and row.p95_ms is not None and row.throughput_ips is not None


def _dominates(a: BenchmarkRow, b: BenchmarkRow) -> bool:
    acc_a = a.accuracy if a.accuracy is not None else float("-inf")
    acc_b = b.accuracy if b.accuracy is not None else float("-inf")
    no_worse = _p95(a) <= _p95(b) and _thr(a) >= _thr(b) and acc_a >= acc_b
    better = _p95(a) < _p95(b) or _thr(a) > _thr(b) or acc_a > acc_b
    return no_worse and better


def _reference(rows: Sequence[BenchmarkRow]) -> float | None:
    known = [(r, r.accuracy) for r in rows if r.accuracy is not None]
    eager = [a for r, a in known if (r.engine, r.precision) == REFERENCE_ENGINE]
    if eager:
        return max(eager)
    return max((a for _, a in known), default=None)


def _sla_text(p95_ms: float | None, max_drop: float | None) -> str:
    parts = []
    if p95_ms is not None:
        parts.append(f"p95 <= {p95_ms:g} ms")
    if max_drop is not None:
        parts.append(f"accuracy drop <= {max_drop:g} pts")
    return "the SLA (" + ", ".join(parts) + ")" if parts else "no SLA"


def _name(row: BenchmarkRow, batch: bool = True) -> str:
    base = f"{row.engine}/{row.precision}"
    if row.artifact:
        base += f" [{row.artifact}]"
    if batch:
        base += f" at batch {row.batch_size}, concurrency {row.concurrency}"
    return base


def _p95(row: BenchmarkRow) -> float:
    return float(row.p95_ms) if row.p95_ms is not None else float("inf")


def _thr(row: BenchmarkRow) -> float:
    return float(row.throughput_ips) if row.throughput_ips is not None else 0.0
