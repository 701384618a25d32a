"""Contracts: round trips, forward compatibility, stale schemas."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Stamp, UnknownEvent, decode, encode
from cvops.contracts.codec import normalise_description
from cvops.contracts.identity import UserCreated
from cvops.contracts.registry import ModelStageChanged, ModelUploadReceived
from cvops.contracts.schemas import render

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")


def test_event_round_trips_through_the_union() -> None:
    e = UserCreated(**STAMP.envelope("u"), username="bob", role="viewer", password_hash="h")
    assert decode(encode(e)) == e
    assert e.subject == "cvops.sec.identity.bob.user_created"  # credentials: own stream


def test_older_reader_ignores_a_new_field() -> None:
    e = ModelStageChanged(**STAMP.envelope("s"), model_name="m", version=1, stage="staging")
    raw = msgspec.json.decode(encode(e))
    raw["added_in_the_future"] = {"x": 1}
    assert decode(msgspec.json.encode(raw)) == e


def test_unknown_event_type_is_returned_not_raised() -> None:
    data = b'{"type":"future.thing.v9","event_id":"x"}'
    out = decode(data)
    assert isinstance(out, UnknownEvent)
    assert out.type == "future.thing.v9"


def test_malformed_known_event_raises() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(b'{"type":"identity.user_created.v1","username":1}')


def test_ids_are_deterministic_per_cause_and_key() -> None:
    a = STAMP.envelope("k")["event_id"]
    assert a == STAMP.envelope("k")["event_id"]
    assert a != STAMP.envelope("other")["event_id"]
    assert isinstance(a, uuid.UUID)


def test_subject_tokens_escape_dots_and_wildcards() -> None:
    e = ModelUploadReceived(
        **STAMP.envelope("u"),
        upload_id="u1",
        model_name="my.model*",
        artifact=ArtifactRef(sha256="0" * 64, size=1),
    )
    assert e.subject == "cvops.evt.registry.upload-u1.model_upload_received"
    stage = ModelStageChanged(**STAMP.envelope("s"), model_name="a.b", version=1, stage="none")
    assert "." not in stage.subject.split(".", 3)[3].rsplit(".", 1)[0]


def test_generated_schemas_are_up_to_date() -> None:
    directory = Path(__file__).parents[1] / "schemas"
    expected = render()
    actual = {p.name: p.read_text() for p in directory.glob("*.json")}
    assert actual == expected, "stale schemas: run `./justw schemas`"


def test_schema_descriptions_do_not_depend_on_how_a_docstring_is_indented() -> None:
    indented = "Where a model came from.\n\n    Filled by the trainer\n    and the converter.\n    "
    dedented = "Where a model came from.\n\nFilled by the trainer\nand the converter."
    assert normalise_description(indented) == normalise_description(dedented)
    assert normalise_description(dedented) == (
        "Where a model came from.\n\nFilled by the trainer and the converter."
    )
