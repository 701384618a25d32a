"""Pareto front, the pick under an SLA, the closest miss, and dynamic-batcher advice."""

from __future__ import annotations

from msgspec.structs import replace

from cvops.engines import BenchmarkRow, pareto_front, recommend


def row(engine, precision, batch, conc, p95, thr, acc=0.95, p50=None, error=None):
    if error:
        return BenchmarkRow(
            engine=engine,
            precision=precision,
            artifact="",
            device="cpu",
            batch_size=batch,
            concurrency=conc,
            error=error,
        )
    return BenchmarkRow(
        engine=engine,
        precision=precision,
        artifact="",
        device="cpu",
        batch_size=batch,
        concurrency=conc,
        requests=100,
        images=100 * batch,
        p50_ms=p50 if p50 is not None else p95 * 0.8,
        p95_ms=p95,
        throughput_ips=thr,
        accuracy=acc,
    )


ROWS = [
    row("torch-eager", "fp32", 1, 1, p95=10.0, thr=110, acc=0.950),
    row("torch-eager", "fp32", 8, 1, p95=50.0, thr=180, acc=0.950),
    row("onnxruntime-cpu", "fp32", 1, 1, p95=5.0, thr=220, acc=0.950),
    row("onnxruntime-cpu", "fp32", 8, 1, p95=20.0, thr=450, acc=0.950),
    row("onnxruntime-cpu", "fp32", 32, 1, p95=70.0, thr=480, acc=0.950),
    row("onnxruntime-cpu", "int8", 1, 1, p95=2.0, thr=600, acc=0.946),
    row("onnxruntime-cpu", "int8", 8, 1, p95=9.0, thr=1100, acc=0.946),
    row("onnxruntime-cpu", "int8", 32, 1, p95=30.0, thr=1300, acc=0.946),
    row("onnxruntime-cpu", "int8", 32, 4, p95=95.0, thr=1350, acc=0.946),
    row("openvino-cpu", "int8", 1, 1, p95=2.5, thr=500, acc=0.930),
    row("tensorrt", "fp16", 1, 1, p95=0, thr=0, error="unavailable: tensorrt: no package"),
]


def test_pareto_front_drops_dominated_and_failed_rows():
    front = pareto_front(ROWS)
    names = {(r.engine, r.precision, r.batch_size, r.concurrency) for r in front}
    # torch eager is beaten on every axis by ORT fp32 at batch 1
    assert not any(r.engine == "torch-eager" for r in front)
    assert ("openvino-cpu", "int8", 1, 1) not in names  # int8 ORT b1: faster, more, more accurate
    assert ("onnxruntime-cpu", "int8", 1, 1) in names  # lowest latency
    assert ("onnxruntime-cpu", "int8", 32, 4) in names  # highest throughput
    assert ("onnxruntime-cpu", "fp32", 1, 1) in names  # most accurate at its latency
    assert all(r.error is None for r in front)
    assert front[0].throughput_ips == max(r.throughput_ips for r in front)


def test_pick_is_the_highest_throughput_row_meeting_the_sla():
    rec = recommend(ROWS, p95_ms=40.0, max_accuracy_drop=1.0)
    assert rec.met_sla
    assert (rec.pick.engine, rec.pick.precision, rec.pick.batch_size) == (
        "onnxruntime-cpu",
        "int8",
        32,
    )
    assert rec.pick.concurrency == 1  # the concurrency-4 row breaks p95
    assert "1300 images/s" in rec.reason and "p95 30.00 ms" in rec.reason
    assert rec.reference_accuracy == 0.95  # torch-eager fp32 is the reference


def test_accuracy_limit_excludes_lossy_engines():
    rec = recommend(ROWS, p95_ms=40.0, max_accuracy_drop=0.2)
    assert (rec.pick.engine, rec.pick.precision, rec.pick.batch_size) == (
        "onnxruntime-cpu",
        "fp32",
        8,
    )


def test_nothing_meets_the_sla_says_so_and_shows_the_closest():
    rec = recommend(ROWS, p95_ms=1.0, max_accuracy_drop=1.0)
    assert rec.pick is None and not rec.met_sla
    assert rec.reason.startswith("nothing meets the SLA (p95 <= 1 ms, accuracy drop <= 1 pts)")
    assert rec.closest.engine == "onnxruntime-cpu" and rec.closest.precision == "int8"
    assert rec.closest.batch_size == 1
    assert "closest is onnxruntime-cpu/int8 at batch 1" in rec.reason
    assert rec.batcher is None


def test_no_sla_picks_peak_throughput():
    rec = recommend(ROWS)
    assert rec.pick.throughput_ips == 1350
    assert "no SLA" in rec.reason


def test_all_rows_failed():
    rec = recommend([ROWS[-1]])
    assert rec.pick is None
    assert "no engine completed a measurement" in rec.reason
    assert "tensorrt" in rec.reason


def test_batcher_advice_prefers_sizes_that_pay_and_fit_the_sla():
    rec = recommend(ROWS, p95_ms=40.0, max_accuracy_drop=1.0)
    advice = rec.batcher
    assert advice.preferred_batch_sizes == [8, 32]
    assert advice.max_batch_size == 32
    # batch-1 p50 is 1.6 ms; the SLA leaves 40 - 30 = 10 ms at batch 32, half is 5 ms > 1.6 ms
    assert advice.max_queue_delay_us == 1600
    tight = recommend(ROWS, p95_ms=31.0, max_accuracy_drop=1.0).batcher
    assert tight.max_queue_delay_us == 500  # half of the 1 ms slack


def test_batcher_advice_turns_batching_off_when_it_does_not_pay():
    rows = [
        row("onnxruntime-cpu", "fp32", 1, 1, p95=5.0, thr=200),
        row("onnxruntime-cpu", "fp32", 8, 1, p95=40.0, thr=202),
    ]
    advice = recommend(rows).batcher
    assert advice.preferred_batch_sizes == []
    assert advice.max_queue_delay_us == 0
    assert "does not raise" in advice.reason


def test_under_a_p95_sla_a_settled_row_beats_an_unsettled_one():
    rows = [replace(r, stable=r.batch_size == 8) for r in ROWS]
    rec = recommend(rows, p95_ms=40.0, max_accuracy_drop=1.0)
    # int8 at batch 32 (1300 img/s) did not settle; int8 at batch 8 (1100 img/s) did
    assert (rec.pick.precision, rec.pick.batch_size, rec.pick.stable) == ("int8", 8, True)
    assert "of 2 stable rows of the" in rec.reason
    assert "did not settle" not in rec.reason
    # the front returned is the stable rows' one: the pick is on it
    assert rec.pick in rec.pareto and all(r.stable for r in rec.pareto)


def test_without_a_p95_sla_stability_does_not_move_the_pick_but_is_flagged():
    rows = [replace(r, stable=r.batch_size == 8) for r in ROWS]
    rec = recommend(rows)
    assert rec.pick.throughput_ips == 1350 and not rec.pick.stable
    assert rec.reason.endswith(
        "its p95 did not settle within the time cap (not stable): measure it longer"
    )
    settled = recommend([replace(r, stable=True) for r in ROWS])
    assert settled.pick.throughput_ips == 1350
    assert "did not settle" not in settled.reason


def test_with_no_settled_row_under_the_sla_the_pick_is_the_unsettled_best():
    rec = recommend(ROWS, p95_ms=40.0, max_accuracy_drop=1.0)  # no row is stable
    assert (rec.pick.precision, rec.pick.batch_size) == ("int8", 32)
    assert "did not settle" in rec.reason
