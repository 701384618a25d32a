"""The trial function itself: what a trial measures on its exported model, and a diverging
run recorded as the trial's own failure (not a crash of the trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvops.trainer.work import TrialError, load_canonical, train_export_measure
from cvops.vision.data import CanonicalDataset, make_synthetic_npz
from cvops.vision.train import TrainConfig
from cvops.vision.zoo import read_weights_info


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_npz(tmp_path_factory.mktemp("d") / "d.npz", n=120, hw=8, channels=1)


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "arch": "simple-cnn",
        "epochs": 1,
        "width": 0.25,
        "batch_size": 32,
        "max_batches_per_epoch": 2,
    }
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_a_trial_measures_its_exported_model(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVOPS_TORCH_THREADS", "1")
    ds = load_canonical(npz, [8, 8])
    out = train_export_measure(_config(), ds, None, lambda: False, tmp_path, "onnxruntime-cpu")
    assert out is not None
    m = out.metrics
    assert 0.0 <= m.accuracy <= 1.0 and m.torch_accuracy is not None
    assert abs(m.accuracy - m.torch_accuracy) <= 0.05  # the exported model agrees
    assert m.latency_ms > 0 and m.size_bytes == out.onnx_path.stat().st_size
    assert m.parameters > 0 and m.epochs == 1
    assert set(out.normalization) == {"mean", "std"}
    info = read_weights_info(out.weights_path)
    assert info.arch_config is not None and info.arch_config["arch"] == "simple-cnn"


def test_a_diverging_trial_is_a_trial_error(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVOPS_TORCH_THREADS", "1")
    ds = load_canonical(npz, [8, 8])
    with pytest.raises(TrialError, match="diverged"):
        train_export_measure(
            _config(lr=1e30, optimizer="sgd"), ds, None, lambda: False, tmp_path, "onnxruntime-cpu"
        )


def test_a_stopped_trial_returns_nothing(npz: Path, tmp_path: Path) -> None:
    ds = load_canonical(npz, [8, 8])
    assert (
        train_export_measure(_config(), ds, None, lambda: True, tmp_path, "onnxruntime-cpu") is None
    )


def test_the_data_set_is_resized_to_the_job_image_size(npz: Path) -> None:
    ds = load_canonical(npz, [12, 10])
    assert isinstance(ds, CanonicalDataset) and ds.x.shape[1:] == (12, 10, 1)
