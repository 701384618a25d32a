"""Search spaces: the default space of an architecture, checks of a user's space, and the
mapping between a configuration and its genome in [0, 1]^d (what the GA operators see).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cvops.contracts.training import ParamSpec

# What each known hyperparameter may be at all: (lowest, highest, kind of value).
# A range or choice outside these is refused before any trial runs.
_LIMITS: dict[str, tuple[float, float | None, type]] = {
    "lr": (1e-7, 10.0, float),
    "weight_decay": (0.0, 1.0, float),
    "batch_size": (1, 65536, int),
    "epochs": (1, 1000, int),
    "width": (0.05, 8.0, float),
    "depth": (1, 16, int),
    "dropout": (0.0, 0.95, float),
    "augment": (0.0, 1.0, float),
    "label_smoothing": (0.0, 0.5, float),
    "momentum": (0.0, 0.999, float),
    "warmup_epochs": (0, 100, int),
}
_CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer": ("sgd", "adamw"),
    "amp": (True, False),
}
KNOWN = tuple(sorted((*_LIMITS, *_CHOICES)))

# The zoo writes "log" for a log-uniform range; the contract calls it "log_float".
_KIND_ALIASES = {"log": "log_float", "float": "float", "int": "int", "categorical": "categorical"}


class SpaceError(ValueError):
    """A search space or fixed value a user must fix; the message says what and why."""


def param_from_hint(hint: Mapping[str, Any]) -> ParamSpec:
    """A ParamSpec from a zoo hint such as ``{"kind": "log", "low": 1e-4, "high": 0.1}``."""
    kind = _KIND_ALIASES.get(str(hint.get("kind")), str(hint.get("kind")))
    return ParamSpec(
        kind=kind,  # type: ignore[arg-type]
        low=hint.get("low"),
        high=hint.get("high"),
        choices=list(hint["choices"]) if hint.get("choices") is not None else None,
    )


def default_space(hints: Mapping[str, Mapping[str, Any]]) -> dict[str, ParamSpec]:
    """The architecture's default search space (the zoo's hints) as ParamSpecs."""
    return {name: param_from_hint(h) for name, h in sorted(hints.items())}


def _check_value(name: str, value: Any) -> None:
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            allowed = ", ".join(map(str, _CHOICES[name]))
            raise SpaceError(f"{name} must be one of {allowed}, got {value!r}")
        return
    low, high, kind = _LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"{name} must be a number, got {value!r}")
    if kind is int and float(value) != int(value):
        raise SpaceError(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise SpaceError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def check_param(name: str, spec: ParamSpec) -> None:
    """Refuse unknown names, empty or inverted ranges, empty choices, values out of limits."""
    if name not in KNOWN:
        raise SpaceError(f"unknown hyperparameter {name!r} (known: {', '.join(KNOWN)})")
    if spec.kind == "categorical":
        if not spec.choices:
            raise SpaceError(f"{name}: categorical with no choices")
        for c in spec.choices:
            _check_value(name, c)
        return
    if spec.low is None or spec.high is None:
        raise SpaceError(f"{name}: a {spec.kind} range needs low and high")
    if spec.low > spec.high:
        raise SpaceError(f"{name}: inverted range (low {spec.low:g} > high {spec.high:g})")
    if spec.low == spec.high:
        raise SpaceError(
            f"{name}: empty range (low = high = {spec.low:g}); fix the value in hyperparameters"
        )
    if spec.kind == "log_float" and spec.low <= 0:
        raise SpaceError(f"{name}: a log range needs low > 0, got {spec.low:g}")
    if spec.kind == "int" and (spec.low != int(spec.low) or spec.high != int(spec.high)):
        raise SpaceError(f"{name}: an int range needs whole-number bounds")
    if name in _CHOICES:
        raise SpaceError(f"{name} takes choices, not a range")
    _check_value(name, spec.low)
    _check_value(name, spec.high)


def check_fixed(values: Mapping[str, Any]) -> None:
    """Refuse fixed hyperparameters that are unknown or out of limits."""
    for name, value in values.items():
        if name not in KNOWN:
            raise SpaceError(f"unknown hyperparameter {name!r} (known: {', '.join(KNOWN)})")
        _check_value(name, value)


def resolve_space(
    defaults: Mapping[str, ParamSpec],
    overrides: Mapping[str, ParamSpec],
    fixed: Mapping[str, Any],
) -> dict[str, ParamSpec]:
    """Defaults, replaced by the user's ranges, minus the fixed names; every entry checked."""
    space = {**defaults, **overrides}
    for name in fixed:
        space.pop(name, None)
    for name, spec in space.items():
        check_param(name, spec)
    check_fixed(fixed)
    return dict(sorted(space.items()))


def _sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def decode_gene(spec: ParamSpec, u: float) -> Any:
    """The value a gene ``u`` in [0, 1] stands for (ints and choices by equal-width bins)."""
    u = min(max(float(u), 0.0), 1.0)
    if spec.kind == "categorical":
        choices = spec.choices or []
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    low, high = float(spec.low or 0.0), float(spec.high or 0.0)
    if spec.kind == "int":
        span = int(high) - int(low)
        return int(low) + min(int(u * (span + 1)), span)
    if spec.kind == "log_float":
        return _sig(math.exp(math.log(low) + u * (math.log(high) - math.log(low))), 3)
    return _sig(low + u * (high - low), 4)


def encode_value(spec: ParamSpec, value: Any) -> float:
    """The gene of a value (the centre of its bin for ints and choices)."""
    if spec.kind == "categorical":
        choices = spec.choices or []
        return (choices.index(value) + 0.5) / len(choices)
    low, high = float(spec.low or 0.0), float(spec.high or 0.0)
    if spec.kind == "int":
        span = int(high) - int(low)
        return (int(value) - int(low) + 0.5) / (span + 1)
    if spec.kind == "log_float":
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (float(value) - low) / (high - low)


def decode(
    space: Mapping[str, ParamSpec], genome: list[float], fixed: Mapping[str, Any]
) -> dict[str, Any]:
    """The configuration of a genome: one gene per name of ``space`` (sorted), plus ``fixed``."""
    names = sorted(space)
    if len(genome) != len(names):
        raise ValueError(f"genome has {len(genome)} genes, the space {len(names)}")
    config = {name: decode_gene(space[name], u) for name, u in zip(names, genome, strict=True)}
    config.update(fixed)
    return dict(sorted(config.items()))
