"""Every integer of an event must fit SQLite's INTEGER, or the event is refused before the log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.registry import DatasetUploadReceived, ModelUploadReceived
from cvops.domain.checks import INT64_MAX, INT64_MIN, check_storable, fits_int64
from cvops.domain.errors import Invalid

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id="c")
BLOB = ArtifactRef(sha256="0" * 64, size=10)


def _dataset(seed: int) -> DatasetUploadReceived:
    return DatasetUploadReceived(
        **STAMP.envelope(f"d-{seed}"),
        upload_id=uuid.uuid4().hex,
        dataset_name="p",
        artifact=BLOB,
        seed=seed,
    )


def test_a_seed_beyond_64_bits_is_refused_naming_the_field_and_value() -> None:
    with pytest.raises(Invalid, match=r"^seed must be .*got 9223372036854775808$"):
        check_storable(_dataset(2**63))


def test_the_64_bit_bounds_themselves_are_storable() -> None:
    check_storable(_dataset(INT64_MAX))
    check_storable({"low": INT64_MIN, "flag": True, "x": 1.5e300, "s": "9" * 40})
    assert fits_int64(INT64_MIN) and not fits_int64(INT64_MIN - 1)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"seed": -(2**63) - 1}, "seed"),
        ([1, [2, 2**64]], "[1][1]"),
        ({"metrics": {"top1": 10**30}}, "metrics['top1']"),
        ({10**20: "key"}, "[100000000000000000000]"),
    ],
)
def test_nested_integers_are_walked_through_lists_dicts_and_keys(value: object, path: str) -> None:
    with pytest.raises(Invalid) as refused:
        check_storable(value)
    assert str(refused.value).startswith(f"{path} must be")


def test_nested_structs_are_walked_with_their_field_path() -> None:
    class Inner(msgspec.Struct):
        dims: list[int]

    class Outer(msgspec.Struct):
        inner: Inner

    with pytest.raises(Invalid, match=r"^inner\.dims\[2\] must be"):
        check_storable(Outer(inner=Inner(dims=[3, 32, 2**70])))
    event = ModelUploadReceived(
        **STAMP.envelope("m"),
        upload_id="u",
        model_name="m",
        artifact=ArtifactRef(sha256="0" * 64, size=2**63),
    )
    with pytest.raises(Invalid, match=r"^artifact\.size must be"):
        check_storable(event)
