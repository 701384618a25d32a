"""Catalog decisions live in ``cvops.domain.catalog``; this module names them for the gateway."""

from __future__ import annotations

from cvops.domain.catalog import (
    MAX_FIELD_CHARS,
    change_stage,
    dataset_named,
    dataset_refusal,
    input_shape,
    optional_int,
    optional_text,
    required_name,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "change_stage",
    "dataset_named",
    "dataset_refusal",
    "input_shape",
    "optional_int",
    "optional_text",
    "required_name",
]
