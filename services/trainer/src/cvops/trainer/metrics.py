"""Prometheus metrics of the trainer (served by the service runtime on trainer_metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRIALS = Counter("cvops_trainer_trials", "Trials this instance ended, by outcome", ["outcome"])
TRIAL_SECONDS = Histogram(
    "cvops_trainer_trial_duration_seconds",
    "Wall time of a trial on this instance: train, export, measure, store",
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
TRIALS_RUNNING = Gauge("cvops_trainer_trials_running", "Trials running on this instance now")
JOB_STEPS = Counter("cvops_trainer_job_steps", "Coordinator steps taken, by kind", ["step"])
