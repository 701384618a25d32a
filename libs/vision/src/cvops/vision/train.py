"""Training loop for one configuration: SGD/AdamW, warmup + cosine, label smoothing, AMP on
CUDA, early stopping, per-epoch checkpoints with resume, pruning/cancel hooks.

Runs are reproducible: weights are initialised from `seed`, and each epoch draws its shuffle,
augmentation and dropout randomness from a seed derived from (seed, epoch), so a run resumed
from the checkpoint of epoch k ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch
from torch import nn

from cvops.vision.data import (
    CanonicalDataset,
    Normalization,
    augment,
    batch_indices,
    compute_normalization,
    load_npz,
    normalize,
    seed_everything,
    to_unit_nchw,
)
from cvops.vision.zoo import Classifier, build_model

StopReason = Literal["completed", "early_stopping", "pruned", "cancelled"]
EpochCallback = Callable[[int, float, float], str | None]

_CHECKPOINT_FORMAT = 1
# Fields that do not change what is computed (where, how fast): a checkpoint stays valid
# when only these differ, e.g. a trial redelivered from a GPU host to a CPU host.
_NOT_FINGERPRINTED = frozenset({"device", "amp", "amp_dtype", "eval_batch_size"})


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int, loss: float):
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch}, batch {batch} "
            "(lower the learning rate?)"
        )
        self.epoch = epoch
        self.batch = batch
        self.loss = loss


class TrainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Hyperparameters and runtime options of one training run (checked on construction)."""

    arch: str = "resnet-mini"
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    width: float = 1.0
    depth: int = 1
    dropout: float = 0.0
    augment: float = 0.0  # augmentation strength in [0, 1]
    warmup_epochs: int = 0
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # only ever used on CUDA
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"
    early_stopping_patience: int = 0  # epochs without val improvement; 0 = off
    max_batches_per_epoch: int | None = None
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive finite number"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.width > 0, "width must be > 0"),
            (self.depth >= 1, "depth must be >= 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.augment <= 1, "augment must be in [0, 1]"),
            (0 <= self.warmup_epochs < self.epochs, "warmup_epochs must be in [0, epochs)"),
            (self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0"),
            (
                self.max_batches_per_epoch is None or self.max_batches_per_epoch >= 1,
                "max_batches_per_epoch must be >= 1",
            ),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def fingerprint(self) -> str:
        """Canonical JSON of the fields that determine the trained weights."""
        fields = {
            k: v for k, v in msgspec.structs.asdict(self).items() if k not in _NOT_FINGERPRINTED
        }
        return json.dumps(fields, sort_keys=True)


class EpochRecord(msgspec.Struct, frozen=True, kw_only=True):
    epoch: int
    train_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """Outcome of `train`: the best-validation model and how the run went."""

    model: Classifier
    config: TrainConfig
    history: list[EpochRecord]
    best_val_acc: float
    best_epoch: int
    epochs_run: int
    stop_reason: StopReason
    normalization: Normalization
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- pieces shared with bench/gpu_train_step.py -----------------------------------------------


def configure_threads() -> int:
    """Cap torch's CPU threads (CVOPS_TORCH_THREADS, else min(2, cores)); returns the count."""
    n = int(os.environ.get("CVOPS_TORCH_THREADS", "0")) or min(2, os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_device(device: str) -> torch.device:
    """torch.device from a string; ValueError when it is malformed or absent."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this host")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} not supported (cpu or cuda)")
    return dev


def amp_dtype_for(device: torch.device, amp: bool, amp_dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype to use, or None for fp32 (always None off CUDA)."""
    if not amp or device.type != "cuda":
        return None
    if amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp_dtype == "bf16" else torch.float16


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov when momentum > 0) or AdamW; no weight decay on biases and norms."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine decay to zero, stepped once per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainStep:
    """One optimisation step: forward under autocast (CUDA AMP), loss, backward, step."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        label_smoothing: float = 0.0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Loss scaling is needed for fp16 only (bf16 has fp32's exponent range).
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=autocast_dtype == torch.float16 and device.type == "cuda"
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run the step on a prepared batch; returns the detached loss (no host sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


# --- checkpoints ------------------------------------------------------------------------------


def _checkpoint_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("epoch-*.pt"), reverse=True)


def _load_latest_checkpoint(
    directory: Path, config: TrainConfig, device: torch.device
) -> dict[str, Any] | None:
    for path in _checkpoint_paths(directory):
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # a torn or foreign file: fall back to the one before
            continue
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            continue
        if ckpt["fingerprint"] != config.fingerprint():
            raise ValueError(
                f"checkpoint {path} was written for a different configuration; "
                "use another checkpoint_dir or resume=False"
            )
        return ckpt
    return None


def _save_checkpoint(directory: Path, epoch: int, state: dict[str, Any], keep: int = 2) -> None:
    path = directory / f"epoch-{epoch:04d}.pt"
    tmp = directory / f".{path.name}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in _checkpoint_paths(directory)[keep:]:
        old.unlink(missing_ok=True)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


# --- the loop ---------------------------------------------------------------------------------


def _val_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: Normalization,
    batch_size: int,
    autocast_dtype: torch.dtype | None,
) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with (
        torch.inference_mode(),
        torch.autocast(
            device_type=x.device.type,
            dtype=autocast_dtype or torch.float32,
            enabled=autocast_dtype is not None,
        ),
    ):
        for i in range(0, x.shape[0], batch_size):
            logits = model(normalize(to_unit_nchw(x[i : i + batch_size]), norm))
            correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return correct.item() / max(1, x.shape[0])


def train(
    config: TrainConfig,
    dataset: CanonicalDataset | str | Path,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train one configuration on the train split, validating on the val split each epoch.

    Args:
        config: hyperparameters and runtime options.
        dataset: a `CanonicalDataset` or the path of a canonical npz.
        on_epoch: called after each epoch with (epoch, train_loss, val_acc), epochs counted
            from 1; returning "stop" ends the run (stop_reason "pruned").
        checkpoint_dir: where to write model+optimizer+scheduler state after every epoch.
        resume: continue from the latest checkpoint in `checkpoint_dir` (when there is one);
            with False, existing checkpoints there are deleted first.
        should_stop: polled after every batch; True ends the run (stop_reason "cancelled").

    Returns:
        `TrainResult` whose model holds the weights of the best validation epoch.

    Raises:
        TrainingDiverged: the loss became NaN/inf.
        ValueError: the data set does not suit the architecture, bad device, or a checkpoint
            of another configuration in `checkpoint_dir`.
    """
    configure_threads()
    device = resolve_device(config.device)
    ds = dataset if isinstance(dataset, CanonicalDataset) else load_npz(dataset)
    if ds.train_idx.size < 2:
        raise ValueError("the train split needs at least 2 images")
    autocast_dtype = amp_dtype_for(device, config.amp, config.amp_dtype)

    seed_everything(config.seed)
    model = build_model(
        config.arch,
        num_classes=ds.num_classes,
        in_channels=ds.channels,
        image_size=ds.image_size,
        width=config.width,
        depth=config.depth,
        dropout=config.dropout,
    ).to(device)
    x_train_np, y_train_np = ds.split("train")
    norm = compute_normalization(x_train_np)
    model.normalization = norm
    x_train = torch.from_numpy(np.ascontiguousarray(x_train_np)).to(device)
    y_train = torch.from_numpy(y_train_np).to(device)
    x_val_np, y_val_np = ds.split("val")
    x_val = torch.from_numpy(np.ascontiguousarray(x_val_np)).to(device)
    y_val = torch.from_numpy(y_val_np).to(device)

    steps_per_epoch = len(batch_indices(len(y_train), config.batch_size, shuffle=False))
    if config.max_batches_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_batches_per_epoch)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(
        optimizer, config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    )
    step = TrainStep(
        model,
        optimizer,
        device=device,
        autocast_dtype=autocast_dtype,
        label_smoothing=config.label_smoothing,
        scheduler=scheduler,
    )

    history: list[EpochRecord] = []
    best_val_acc, best_epoch, since_best = -1.0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, resumed_from = 1, 0
    done: StopReason | None = None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt = _load_latest_checkpoint(ckpt_dir, config, device) if resume else None
        if not resume:
            for stale in _checkpoint_paths(ckpt_dir):
                stale.unlink()
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step.scaler.load_state_dict(ckpt["scaler"])
            history = [EpochRecord(**r) for r in ckpt["history"]]
            best_val_acc, best_epoch = ckpt["best_val_acc"], ckpt["best_epoch"]
            since_best, best_state = ckpt["since_best"], ckpt["best_model"]
            resumed_from = ckpt["epoch"]
            start_epoch = resumed_from + 1
            done = ckpt["done"] or None

    def finish(reason: StopReason) -> TrainResult:
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return TrainResult(
            model=model,
            config=config,
            history=history,
            best_val_acc=max(best_val_acc, 0.0),
            best_epoch=best_epoch,
            epochs_run=len(history),
            stop_reason=reason,
            normalization=norm,
            resumed_from_epoch=resumed_from,
        )

    if done is not None:
        return finish(done)

    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout
        batches = batch_indices(len(y_train), config.batch_size, shuffle=True, generator=generator)
        batches = batches[:steps_per_epoch]
        model.train()
        running = torch.zeros((), device=device)
        for b, idx in enumerate(batches):
            idx = idx.to(device)
            xb = augment(to_unit_nchw(x_train[idx]), config.augment, generator)
            loss = step(normalize(xb, norm), y_train[idx])
            running += loss
            # One host sync per batch is free on CPU; on CUDA check every 10 batches.
            if device.type != "cuda" or b % 10 == 9 or b == len(batches) - 1:
                total = running.item()
                if not math.isfinite(total):
                    raise TrainingDiverged(epoch, b + 1, loss.item())
            if should_stop is not None and should_stop():
                return finish("cancelled")
        train_loss = running.item() / len(batches)
        val_acc = _val_accuracy(model, x_val, y_val, norm, config.eval_batch_size, autocast_dtype)
        history.append(
            EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_acc=val_acc,
                lr=float(scheduler.get_last_lr()[0]),
                seconds=time.perf_counter() - started,
            )
        )
        if val_acc > best_val_acc:
            best_val_acc, best_epoch, since_best = val_acc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if config.early_stopping_patience and since_best >= config.early_stopping_patience:
            done = "early_stopping"
        if on_epoch is not None and on_epoch(epoch, train_loss, val_acc) == "stop":
            done = "pruned"
        if ckpt_dir is not None:
            _save_checkpoint(
                ckpt_dir,
                epoch,
                {
                    "format": _CHECKPOINT_FORMAT,
                    "fingerprint": config.fingerprint(),
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": step.scaler.state_dict(),
                    "history": [msgspec.structs.asdict(r) for r in history],
                    "best_val_acc": best_val_acc,
                    "best_epoch": best_epoch,
                    "since_best": since_best,
                    "best_model": best_state,
                    "normalization": norm.to_dict(),
                    "done": done or "",
                },
            )
        if done is not None:
            return finish(done)
    return finish("completed")
