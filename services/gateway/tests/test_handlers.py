"""Pure decisions and the projection as plain unit tests: no broker, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Stamp, TensorSpec
from cvops.contracts.api import ModelVersionView, UpdateUser
from cvops.contracts.identity import (
    PasswordSet,
    RoleChanged,
    TokenIssued,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.contracts.registry import (
    ModelRejected,
    ModelStageChanged,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.core import ProjectionRunner, dump_rows
from cvops.gateway import feed as event_feed
from cvops.gateway import projection as views
from cvops.gateway.catalog import projection as catalog_views
from cvops.gateway.catalog import rules as catalog
from cvops.gateway.errors import Conflict, Invalid, NotFound
from cvops.gateway.identity import projection as identity_views
from cvops.gateway.identity import rules as identity
from cvops.gateway.identity.rules import TokenState, UserState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = Stamp(now=NOW, actor="root", correlation_id="req-1")
REF = ArtifactRef(sha256="ab" * 32, size=3, filename="m.onnx")


def user(name: str = "ann", role: str = "admin", disabled: bool = False) -> UserState:
    return UserState(username=name, role=role, disabled=disabled, created_at=NOW)  # type: ignore[arg-type]


def version(stage: str = "none") -> ModelVersionView:
    return ModelVersionView(
        model_name="net",
        version=1,
        stage=stage,  # type: ignore[arg-type]
        format="onnx",
        artifact=REF,
        inputs=[],
        outputs=[],
        parameter_count=1,
        created_at=NOW,
        created_by="ann",
    )


def test_creating_a_user_is_deterministic_and_refuses_taken_or_bad_names() -> None:
    args = {"username": "bob", "role": "viewer", "password_hash": "h", "stamp": STAMP}
    first = identity.create_user(None, **args)
    assert first == identity.create_user(None, **args)  # same stamp -> same event id
    assert isinstance(first[0], UserCreated) and first[0].actor == "root"
    with pytest.raises(Conflict):
        identity.create_user(user("bob"), **args)
    with pytest.raises(Invalid):
        identity.create_user(None, **{**args, "username": "a/b"})
    with pytest.raises(Invalid):
        identity.create_user(None, **{**args, "role": "root"})


def test_the_last_active_admin_cannot_be_demoted_or_disabled() -> None:
    for change in (UpdateUser(role="viewer"), UpdateUser(disabled=True)):
        with pytest.raises(Conflict):
            identity.update_user(user(), change, password_hash=None, active_admins=1, stamp=STAMP)
    events = identity.update_user(
        user(), UpdateUser(role="viewer"), password_hash=None, active_admins=2, stamp=STAMP
    )
    assert [type(e) for e in events] == [RoleChanged]


def test_update_user_emits_only_what_changes() -> None:
    viewer = user("vic", "viewer")
    same = UpdateUser(role="viewer", disabled=False)
    assert (
        identity.update_user(viewer, same, password_hash=None, active_admins=1, stamp=STAMP) == []
    )
    all_of_it = UpdateUser(role="engineer", password="x" * 9, disabled=True)
    events = identity.update_user(
        viewer, all_of_it, password_hash="new", active_admins=1, stamp=STAMP
    )
    assert [type(e) for e in events] == [RoleChanged, PasswordSet, UserDisabled]
    assert len({e.event_id for e in events}) == 3
    back = identity.update_user(
        user("vic", "viewer", disabled=True),
        UpdateUser(disabled=False),
        password_hash=None,
        active_admins=1,
        stamp=STAMP,
    )
    assert [type(e) for e in back] == [UserEnabled]
    with pytest.raises(NotFound):
        identity.update_user(None, same, password_hash=None, active_admins=1, stamp=STAMP)


def test_tokens_are_issued_to_active_users_and_revoked_by_their_owner_or_an_admin() -> None:
    issued = identity.issue_token(
        user(),
        token_id="t1",
        token_sha256="d" * 64,
        label="ci",
        kind="session",
        expires_at=NOW,
        stamp=STAMP,
    )
    assert isinstance(issued[0], TokenIssued) and issued[0].kind == "session"
    with pytest.raises(NotFound):
        identity.issue_token(
            user(disabled=True),
            token_id="t2",
            token_sha256="d" * 64,
            label="",
            kind="api",
            expires_at=None,
            stamp=STAMP,
        )
    token = TokenState(
        token_id="t1",
        username="ann",
        token_sha256="d" * 64,
        kind="api",
        label="",
        created_at=NOW,
        expires_at=None,
        revoked=False,
    )
    with pytest.raises(NotFound):
        identity.revoke_token(token, username="eve", is_admin=False, stamp=STAMP)
    assert identity.revoke_token(token, username="root", is_admin=True, stamp=STAMP)
    gone = msgspec.structs.replace(token, revoked=True)
    assert identity.revoke_token(gone, username="ann", is_admin=False, stamp=STAMP) == []


def test_bootstrap_happens_only_on_an_empty_platform_and_keeps_no_secret() -> None:
    args = {"password_hash": "argon", "token_id": "t", "token_sha256": "f" * 64, "stamp": STAMP}
    assert identity.bootstrap_admin(3, **args) == []
    created, token = identity.bootstrap_admin(0, **args)
    assert isinstance(created, UserCreated) and created.role == "admin"
    assert isinstance(token, TokenIssued) and token.token_sha256 == "f" * 64


def test_stage_change_to_the_current_stage_changes_nothing() -> None:
    assert catalog.change_stage(version("staging"), "staging", stamp=STAMP) == []
    (moved,) = catalog.change_stage(version("staging"), "production", stamp=STAMP)
    assert isinstance(moved, ModelStageChanged) and moved.previous == "staging"
    with pytest.raises(Invalid):
        catalog.change_stage(version(), "live", stamp=STAMP)
    with pytest.raises(NotFound):
        catalog.change_stage(None, "staging", stamp=STAMP)


def _log() -> list[tuple[int, object]]:
    s = STAMP
    spec = TensorSpec(name="x", shape=[1, 3], dtype="float32")
    events = [
        UserCreated(**s.envelope("u"), username="ann", role="admin", password_hash="secret-h"),
        TokenIssued(**s.envelope("t"), username="ann", token_id="t1", token_sha256="d" * 64),
        RoleChanged(**s.envelope("r"), username="ann", role="engineer"),
        ModelUploadReceived(**s.envelope("m"), upload_id="u1", model_name="net", artifact=REF),
        ModelVersionAdded(
            **s.envelope("v"),
            model_name="net",
            version=1,
            upload_id="u1",
            artifact=REF,
            format="onnx",
            inputs=[spec],
            outputs=[spec],
            parameter_count=7,
        ),
        ModelStageChanged(**s.envelope("st"), model_name="net", version=1, stage="staging"),
        ModelUploadReceived(**s.envelope("m2"), upload_id="u2", model_name="net", artifact=REF),
        ModelRejected(**s.envelope("x"), upload_id="u2", model_name="net", reason="pickle"),
    ]
    return list(enumerate(events, start=1))


def test_projection_applied_twice_leaves_identical_rows(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, views.GatewayProjection(), tmp_path / "g.sqlite")
    # identity's events come from their own stream, into their own file
    identity = ProjectionRunner(
        None, identity_views.IdentityProjection(), tmp_path / "gateway-identity.sqlite"
    )
    log = _log()
    secret = [(seq, e) for seq, e in log if getattr(e, "context", "") == "identity"]
    batch = [(seq, e) for seq, e in log if getattr(e, "context", "") != "identity"]
    for target, events, metadata in (
        (runner, batch, views.metadata),
        (identity, secret, identity_views.metadata),
    ):
        target.apply_batch(events)  # type: ignore[arg-type]
        once = dump_rows(target.engine, metadata)
        target.apply_batch(events)  # type: ignore[arg-type]
        assert dump_rows(target.engine, metadata) == once
    with identity.session() as s:
        assert identity_views.get_user(s, "ann").role == "engineer"  # type: ignore[union-attr]
    identity.engine.dispose()
    with runner.session() as s:
        found = catalog_views.get_model(s, "net")
        assert found is not None and found.owner == "root" and found.latest_version == 1
        assert found.versions[0].stage == "staging"
        assert catalog_views.get_upload(s, "u1").status == "validated"  # type: ignore[union-attr]
        rejected = catalog_views.get_upload(s, "u2")
        assert rejected is not None and (rejected.status, rejected.reason) == ("rejected", "pickle")
        feed = event_feed.events_after(s, "req-1", 0)
    runner.engine.dispose()
    assert [e.seq for e in feed] == [seq for seq, _ in batch]  # no identity event in a feed
