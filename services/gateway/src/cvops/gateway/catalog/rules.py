"""Catalog decisions: stage changes, the fields of an upload form, why a data set is unusable.

No clock, no uuid, no I/O: state + command -> events, or a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping

from cvops.contracts import Event, Stamp
from cvops.contracts.api import DatasetView, ModelVersionView
from cvops.contracts.registry import STAGES, ModelStageChanged, Stage
from cvops.gateway.checks import check_name
from cvops.gateway.errors import Invalid, NotFound

MAX_FIELD_CHARS = 2000


def change_stage(version: ModelVersionView | None, stage: str, *, stamp: Stamp) -> list[Event]:
    """Move a model version to another stage; asking for the current stage changes nothing."""
    if version is None:
        raise NotFound("no such model version")
    if stage not in STAGES:
        raise Invalid(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if stage == version.stage:
        return []
    new_stage: Stage = stage  # type: ignore[assignment]
    return [
        ModelStageChanged(
            **stamp.envelope(f"stage/{version.model_name}/{version.version}/{stage}"),
            model_name=version.model_name,
            version=version.version,
            stage=new_stage,
            previous=version.stage,
        )
    ]


def dataset_refusal(name: str, version: int | None, rejection: str | None) -> str:
    """Why a training or conversion cannot use data set ``name`` (it has no such version)."""
    if version is not None:
        return f"data set {name!r} has no validated version {version}"
    if rejection is not None:
        return f"data set {name!r} failed validation: {rejection}"
    return f"unknown data set {name!r}; upload it first (cvops datasets upload)"


def dataset_named(name: str | None, version: int | None, found: DatasetView | None) -> None:
    """Refuse a request that names a data set (version) the catalog does not have."""
    if name is not None and found is None:
        raise Invalid(dataset_refusal(name, version, None))


# -- upload forms ------------------------------------------------------------------------------


def required_name(fields: Mapping[str, str]) -> str:
    name = fields.get("name", "").strip()
    if not name:
        raise Invalid("missing form field 'name'")
    return check_name(name)


def optional_text(fields: Mapping[str, str], field: str, max_chars: int) -> str | None:
    value = fields.get(field, "").strip()
    if len(value) > max_chars:
        raise Invalid(f"field {field!r} is longer than {max_chars} characters")
    return value or None


def optional_int(fields: Mapping[str, str], field: str, *, minimum: int) -> int | None:
    raw = fields.get(field, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise Invalid(f"field {field!r} must be an integer, got {raw!r}") from err
    if value < minimum:
        raise Invalid(f"field {field!r} must be at least {minimum}")
    return value


def input_shape(raw: str) -> list[int] | None:
    """``"3,32,32"`` -> ``[3, 32, 32]``; 1 to 5 positive dimensions."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        dims = [int(d) for d in raw.replace("x", ",").split(",")]
    except ValueError as err:
        raise Invalid(f"input_shape must look like '3,32,32', got {raw!r}") from err
    if not 1 <= len(dims) <= 5 or any(d < 1 for d in dims):
        raise Invalid(f"input_shape must have 1 to 5 positive dimensions, got {raw!r}")
    return dims
