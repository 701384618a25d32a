"""The trainer's projection: a job's rows from its events, unchanged by repeats, and the
queries the coordinator and the trial runners use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.registry import DatasetRejected, DatasetValidated, ImageStats, SplitCounts
from cvops.contracts.training import (
    Budget,
    TrainingRequested,
    TrialCompleted,
    TrialMetrics,
    TrialProgressed,
)
from cvops.core import ProjectionRunner, dump_rows
from cvops.domain.training import evolve
from cvops.trainer import handlers, projection
from cvops.trainer.work import architectures

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = Stamp(now=NOW, actor="alice", correlation_id="req-p")
REF = ArtifactRef(sha256="c" * 64, size=1)


def _dataset() -> DatasetValidated:
    return DatasetValidated(
        **STAMP.envelope("ds"),
        dataset_name="digits",
        version=1,
        upload_id="u1",
        source=REF,
        canonical=REF,
        classes=["a", "b"],
        class_counts=[5, 5],
        num_images=10,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
        splits=SplitCounts(train=6, val=2, test=2, calibration=2),
    )


def _job_events(runner: ProjectionRunner) -> tuple[list[Event], list[Event]]:
    """Request, start, generation 0 with its trials; then results of two trials."""
    req = TrainingRequested(
        **STAMP.envelope("req"),
        job_id="job-p",
        dataset="digits",
        arch="simple-cnn",
        budget=Budget(population=2, generations=1),
        epochs=2,
    )
    view = evolve(None, req, 1)
    assert view is not None
    with runner.session() as s:
        catalog = handlers.Catalog(
            datasets=projection.dataset_versions(s),
            rejections=projection.dataset_rejection_reasons(s),
            architectures=architectures(),
        )
    stamp = handlers.job_stamp(view, NOW)
    started = handlers.validate_request(view, catalog, stamp)
    view = evolve(view, started[0], 2)
    assert view is not None and view.status == "running", view.reason
    generation = handlers.start_generation(view, 0, stamp)
    results: list[Event] = []
    for spec in generation[0].trials:  # type: ignore[attr-defined]
        keys = {"trial_id": spec.trial_id, "job_id": "job-p", "generation": 0, "index": spec.index}
        results.append(
            TrialProgressed(
                **STAMP.envelope(f"p-{spec.index}"),
                **keys,
                attempt=1,
                epoch=1,
                epochs=2,
                train_loss=1.0,
                val_accuracy=0.4 + spec.index / 10,
            )
        )
        results.append(
            TrialCompleted(
                **STAMP.envelope(f"c-{spec.index}"),
                **keys,
                hyperparameters=spec.hyperparameters,
                metrics=TrialMetrics(accuracy=0.6, latency_ms=1.0, size_bytes=10, parameters=50),
                onnx=REF,
                weights=REF,
                normalization={"mean": [0.1], "std": [0.2]},
            )
        )
    return [req, *started, *generation], results


def test_job_rows_come_from_events_and_repeats_change_nothing(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, projection.projection, tmp_path / "trainer.sqlite")
    rejected = DatasetRejected(
        **STAMP.envelope("rej"), upload_id="u0", dataset_name="bad", reason="not images"
    )
    runner.apply_batch([(1, _dataset()), (2, rejected)])
    job, results = _job_events(runner)
    batch = list(enumerate(job + results, start=3))
    runner.apply_batch(batch)
    once = dump_rows(runner.engine, projection.metadata)
    runner.apply_batch(batch)  # redelivered batch: at or below the checkpoint, skipped
    # the same trial results appended again later (a redelivered trial publishing twice)
    runner.apply_batch(list(enumerate(results, start=100)))
    assert dump_rows(runner.engine, projection.metadata) == once

    with runner.session() as s:
        view = projection.load_job(s, "job-p")
        assert view is not None and view.counts(0)["completed"] == 2
        assert handlers.next_step(view).kind == "complete"
        assert projection.job_status(s, "job-p") == ("running", False)
        peers = projection.peer_progress(s, "job-p", 1, exclude="job-p-g0-t0")
        assert [p.val_accuracy for p in peers] == [0.5]
        assert projection.dataset_rejection_reasons(s) == {"bad": "not images"}
        [listed] = projection.list_jobs(s)
        assert listed["status"] == "running" and listed["trials_completed"] == 2
