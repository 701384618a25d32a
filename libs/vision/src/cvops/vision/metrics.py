"""Classification metrics (numpy) for torch models and for any `predict(batch) -> logits`.

A predict callable takes a normalised float32 NCHW numpy batch and returns logits (N, classes),
so an ONNX Runtime session is evaluated exactly like the torch model it was exported from.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import torch
from torch import nn

from cvops.vision.data import Normalization, preprocess

Predict = Callable[[np.ndarray], np.ndarray]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (classes, classes): row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes})")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (nan for no samples)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall per class from a confusion matrix (nan for a class with no samples)."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


class ClassificationReport(msgspec.Struct, frozen=True, kw_only=True):
    """Accuracy, per-class accuracy (None where a class has no samples) and confusion matrix."""

    num_samples: int
    accuracy: float
    per_class_accuracy: list[float | None]
    confusion: list[list[int]]


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> ClassificationReport:
    """All metrics of one set of predictions."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    per_class = [None if np.isnan(v) else float(v) for v in per_class_accuracy(cm)]
    return ClassificationReport(
        num_samples=int(cm.sum()),
        accuracy=accuracy(y_true, y_pred),
        per_class_accuracy=per_class,
        confusion=cm.tolist(),
    )


def torch_predict(model: nn.Module, device: str | torch.device = "cpu") -> Predict:
    """Wrap a torch model as a numpy `predict` (eval mode, no grad)."""
    model.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(batch).to(device))
        return out.float().cpu().numpy()

    return predict


def predict_logits(
    predict: Predict | nn.Module,
    x: np.ndarray,
    normalization: Normalization,
    batch_size: int = 256,
) -> np.ndarray:
    """Logits of uint8 NHWC images, preprocessed and fed in batches."""
    if isinstance(predict, nn.Module):
        device = next(predict.parameters()).device
        predict = torch_predict(predict, device)
    chunks = [
        np.asarray(predict(preprocess(x[i : i + batch_size], normalization)))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def evaluate(
    predict: Predict | nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    normalization: Normalization,
    batch_size: int = 256,
) -> ClassificationReport:
    """Classification report of a torch model or a predict callable on uint8 NHWC images.

    Args:
        predict: a torch module, or a callable taking normalised float32 NCHW and
            returning logits (e.g. an ONNX Runtime session's run).
        x: uint8 images (N, H, W, C).
        y: int labels (N,).
        num_classes: size of the confusion matrix.
        normalization: the mean/std the model was trained with.
        batch_size: images per call of `predict`.

    Returns:
        The `ClassificationReport`.
    """
    logits = predict_logits(predict, x, normalization, batch_size)
    y_pred = logits.argmax(axis=1) if len(x) else np.zeros(0, dtype=np.int64)
    return classification_report(y, y_pred, num_classes)
