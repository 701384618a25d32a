"""Training loop: learns, is reproducible, resumes, diverges loudly, stops when told."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import torch

from cvops.vision import (
    CanonicalDataset,
    TrainConfig,
    TrainingDiverged,
    evaluate,
    load_weights,
    save_weights,
    train,
)

FAST = {"arch": "simple-cnn", "width": 0.25, "batch_size": 16, "lr": 0.05, "epochs": 2}


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{**FAST, **overrides})


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_training_a_tiny_set_beats_chance_in_two_epochs(tiny_npz: Path, optimizer: str):
    lr = 0.05 if optimizer == "sgd" else 0.01
    seen: list[tuple[int, float, float]] = []
    result = train(
        _config(optimizer=optimizer, lr=lr, augment=0.3, label_smoothing=0.1),
        tiny_npz,
        on_epoch=lambda e, loss, acc: seen.append((e, loss, acc)),
    )
    assert result.stop_reason == "completed" and result.epochs_run == 2
    assert [e for e, _, _ in seen] == [1, 2]
    assert result.best_val_acc > 0.5  # chance is 0.25
    assert [r.epoch for r in result.history] == [1, 2]
    assert result.history[-1].lr < result.history[0].lr  # cosine decay


def test_returned_model_is_the_best_epoch_and_evaluates_as_recorded(tiny: CanonicalDataset):
    result = train(_config(epochs=3), tiny)
    x_val, y_val = tiny.split("val")
    report = evaluate(result.model, x_val, y_val, tiny.num_classes, result.normalization)
    assert report.accuracy == pytest.approx(result.best_val_acc)
    assert result.best_val_acc == max(r.val_acc for r in result.history)


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tiny: CanonicalDataset):
    config = _config(augment=0.5, dropout=0.2)
    first, second = train(config, tiny), train(config, tiny)
    assert _same_weights(first.model, second.model)
    assert first.history[-1].train_loss == second.history[-1].train_loss
    other = train(msgspec.structs.replace(config, seed=1), tiny)
    assert not _same_weights(first.model, other.model)


def test_resume_continues_at_the_next_epoch_and_ends_like_an_uninterrupted_run(
    tiny: CanonicalDataset, tmp_path: Path
):
    config = _config(epochs=3, augment=0.5, dropout=0.2)
    uninterrupted = train(config, tiny)

    def crash_at_epoch_2(epoch: int, loss: float, acc: float) -> None:
        if epoch == 2:
            raise RuntimeError("trainer killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(config, tiny, on_epoch=crash_at_epoch_2, checkpoint_dir=tmp_path)
    assert [p.name for p in tmp_path.glob("epoch-*.pt")] == ["epoch-0001.pt"]

    epochs_seen: list[int] = []
    resumed = train(
        config, tiny, on_epoch=lambda e, *_: epochs_seen.append(e), checkpoint_dir=tmp_path
    )
    assert resumed.resumed_from_epoch == 1 and epochs_seen == [2, 3]
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert _same_weights(resumed.model, uninterrupted.model)

    # A finished run is not trained again.
    again = train(
        config, tiny, on_epoch=lambda e, *_: epochs_seen.append(e), checkpoint_dir=tmp_path
    )
    assert epochs_seen == [2, 3] and again.resumed_from_epoch == 3
    assert _same_weights(again.model, uninterrupted.model)


def test_checkpoints_of_another_configuration_are_not_silently_reused(
    tiny: CanonicalDataset, tmp_path: Path
):
    train(_config(epochs=1), tiny, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        train(_config(epochs=1, lr=0.01), tiny, checkpoint_dir=tmp_path)
    fresh = train(_config(epochs=1, lr=0.01), tiny, checkpoint_dir=tmp_path, resume=False)
    assert fresh.resumed_from_epoch == 0


def test_a_huge_learning_rate_raises_training_diverged(tiny: CanonicalDataset):
    with pytest.raises(TrainingDiverged, match="diverged") as err:
        train(_config(lr=1e30), tiny)
    assert err.value.epoch == 1


def test_callback_stop_prunes_and_should_stop_cancels(tiny: CanonicalDataset):
    pruned = train(_config(epochs=5), tiny, on_epoch=lambda e, *_: "stop" if e == 2 else None)
    assert pruned.stop_reason == "pruned" and pruned.epochs_run == 2

    polls = iter(range(1_000))
    cancelled = train(_config(epochs=5), tiny, should_stop=lambda: next(polls) >= 3)
    assert cancelled.stop_reason == "cancelled" and cancelled.epochs_run == 0


def test_early_stopping_ends_a_run_that_stopped_improving(tiny: CanonicalDataset):
    # lr tiny: validation accuracy cannot improve after the first epoch.
    result = train(_config(epochs=8, lr=1e-9, early_stopping_patience=2), tiny)
    assert result.stop_reason == "early_stopping" and result.epochs_run == 3


def test_max_batches_per_epoch_limits_the_work(tiny: CanonicalDataset):
    polls: list[int] = []
    train(_config(epochs=1, max_batches_per_epoch=2), tiny, should_stop=lambda: polls.append(1))
    assert len(polls) == 2


def test_a_trained_model_survives_safetensors_with_its_normalisation(
    tiny: CanonicalDataset, tmp_path: Path
):
    result = train(_config(epochs=1), tiny)
    path = save_weights(result.model, tmp_path / "best.safetensors")
    loaded = load_weights("simple-cnn", path)
    assert loaded.normalization == result.normalization
    x_val, y_val = tiny.split("val")
    before = evaluate(result.model, x_val, y_val, 4, result.normalization)
    after = evaluate(loaded, x_val, y_val, 4, loaded.normalization)
    assert before == after


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"augment": 1.5}, "augment"),
        ({"warmup_epochs": 2}, "warmup_epochs"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_configurations_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({**FAST, **overrides}, TrainConfig)


def test_unsuitable_data_or_device_is_refused(tiny: CanonicalDataset):
    with pytest.raises(ValueError, match="too small for resnet-mini"):
        train(
            _config(arch="resnet-mini"),
            tiny.__class__.from_arrays({**tiny.arrays(), "x": tiny.x[:, :8, :8]}),
        )
    with pytest.raises(ValueError, match="unknown architecture"):
        train(_config(arch="alexnet"), tiny)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(_config(device="cuda"), tiny)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp_dtype", ["bf16", "fp16"])
def test_amp_training_on_the_gpu_learns_and_returns_a_cpu_model(
    tiny: CanonicalDataset, amp_dtype: str
) -> None:
    result = train(_config(device="cuda", amp=True, amp_dtype=amp_dtype, epochs=3), tiny)
    assert result.stop_reason == "completed" and result.best_val_acc > 0.5  # chance is 0.25
    x_val, y_val = tiny.split("val")
    model = result.model.to("cpu").float()
    report = evaluate(model, x_val, y_val, tiny.num_classes, result.normalization)
    assert report.accuracy > 0.5
