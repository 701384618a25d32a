"""Metrics on hand-made examples; a predict callable is evaluated like the torch model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvops.vision import (
    accuracy,
    build_model,
    classification_report,
    compute_normalization,
    confusion_matrix,
    evaluate,
    per_class_accuracy,
    preprocess,
)


def test_confusion_matrix_accuracy_and_per_class_on_a_hand_made_example():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    per_class = per_class_accuracy(cm)
    assert per_class[:3].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert math.isnan(per_class[3])  # no samples of class 3

    report = classification_report(y_true, y_pred, 4)
    assert report.num_samples == 6 and report.accuracy == pytest.approx(4 / 6)
    assert report.per_class_accuracy[3] is None and report.confusion == cm.tolist()


def test_metrics_refuse_mismatched_or_out_of_range_labels():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 2)


def test_a_predict_callable_is_evaluated_exactly_like_the_torch_model(tiny):
    torch.manual_seed(0)
    model = build_model("simple-cnn", tiny.num_classes, tiny.channels, 16, width=0.25).eval()
    x, y = tiny.split("val")
    norm = compute_normalization(tiny.split("train")[0])
    calls: list[tuple] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        assert batch.dtype == np.float32
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    via_module = evaluate(model, x, y, tiny.num_classes, norm, batch_size=7)
    via_callable = evaluate(predict, x, y, tiny.num_classes, norm, batch_size=7)
    assert via_module == via_callable
    assert calls[0] == (7, 3, 16, 16) and sum(c[0] for c in calls) == len(x)
    with torch.inference_mode():
        expected = model(torch.from_numpy(preprocess(x, norm))).argmax(1).numpy()
    assert via_module.accuracy == pytest.approx(float(np.mean(expected == y)))
