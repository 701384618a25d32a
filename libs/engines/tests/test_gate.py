"""The accuracy gate is a pure function of a parity report."""

from __future__ import annotations

import numpy as np
import pytest

from cvops.engines import ConversionError, ParityReport, compare, gate


def report(**fields):
    base = dict(
        artifact="int8",
        engine="onnxruntime-cpu",
        precision="int8",
        n_images=100,
        max_abs_error=0.1,
        mean_abs_error=0.01,
        max_rel_error=0.02,
        top1_agreement=0.99,
        reference_accuracy=0.95,
        candidate_accuracy=0.945,
        accuracy_drop=0.5,
    )
    base.update(fields)
    return ParityReport(**base)


def test_within_the_limit_passes_with_the_numbers():
    verdict = gate(report(), max_accuracy_drop=1.0)
    assert verdict.passed and verdict.basis == "accuracy"
    assert "accuracy 94.50% vs source 95.00% (drop 0.50 pts, limit 1.00)" in verdict.reason


def test_over_the_limit_is_rejected():
    verdict = gate(report(candidate_accuracy=0.93, accuracy_drop=2.0), max_accuracy_drop=1.0)
    assert not verdict.passed
    assert verdict.drop_points == 2.0
    assert "rejected" in verdict.reason and "drop 2.00 pts" in verdict.reason


def test_the_limit_is_inclusive_and_configurable():
    assert gate(report(accuracy_drop=1.0), 1.0).passed
    assert not gate(report(accuracy_drop=0.5), 0.25).passed


def test_without_labels_top1_disagreement_is_gated():
    unlabelled = report(reference_accuracy=None, candidate_accuracy=None, accuracy_drop=None)
    verdict = gate(unlabelled, 0.5)
    assert verdict.basis == "top1-agreement" and not verdict.passed
    assert verdict.drop_points == pytest.approx(1.0)


def test_non_finite_outputs_never_pass():
    assert not gate(report(max_abs_error=float("nan"), accuracy_drop=0.0)).passed


def test_compare_computes_errors_agreement_and_accuracy():
    reference = np.array([[2.0, 0.0], [0.0, 4.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    candidate = np.array([[1.5, 0.0], [0.0, 4.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    labels = np.array([0, 1, 0, 0])
    r = compare(reference, candidate, labels)
    assert r.max_abs_error == 1.0
    assert r.max_rel_error == 1.0  # third image: |1 - 0| / max|ref| = 1
    assert r.top1_agreement == 0.75
    assert r.reference_accuracy == 0.75 and r.candidate_accuracy == 0.5
    assert r.accuracy_drop == pytest.approx(25.0)


def test_compare_refuses_mismatched_shapes():
    with pytest.raises(ConversionError, match="shapes differ"):
        compare(np.zeros((2, 3)), np.zeros((2, 4)))
