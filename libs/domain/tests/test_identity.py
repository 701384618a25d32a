"""Identity rules on plain structs: given events, when a command or event, then a state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from cvops.contracts import Event, Stamp
from cvops.contracts.api import UpdateUser
from cvops.contracts.identity import (
    PasswordSet,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.domain import identity as rules
from cvops.domain.errors import Conflict, Invalid, NotFound
from cvops.domain.identity import TokenState, UserState

T0 = datetime(2026, 5, 1, tzinfo=UTC)
STAMP = Stamp(now=T0, actor="root", correlation_id="c1")


def fold(evolve, events):  # type: ignore[no-untyped-def]
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def given_user(*more: Event) -> UserState | None:
    created = UserCreated(**STAMP.envelope("u"), username="ann", role="admin", password_hash="h")
    return fold(rules.evolve_user, [created, *more])


def test_a_user_is_created_then_changed() -> None:
    s = STAMP
    user = given_user(
        RoleChanged(**s.envelope("r"), username="ann", role="engineer"),
        UserDisabled(**s.envelope("d"), username="ann"),
    )
    assert user == UserState(
        username="ann", role="engineer", disabled=True, created_at=T0, created_by="root"
    )
    enabled = rules.evolve_user(user, UserEnabled(**s.envelope("e"), username="ann"))
    assert enabled is not None and not enabled.disabled


def test_applying_an_event_twice_changes_nothing() -> None:
    s = STAMP
    events: list[Event] = [
        UserCreated(**s.envelope("u"), username="ann", role="admin", password_hash="h"),
        RoleChanged(**s.envelope("r"), username="ann", role="viewer"),
        UserDisabled(**s.envelope("d"), username="ann"),
        PasswordSet(**s.envelope("p"), username="ann", password_hash="h2"),
        TokenIssued(**s.envelope("t"), username="ann", token_id="t1", token_sha256="d"),
        TokenRevoked(**s.envelope("x"), username="ann", token_id="t1"),
    ]
    for evolve in (rules.evolve_user, rules.evolve_password, rules.evolve_token):
        state = None
        for event in events:
            once = evolve(state, event)
            assert evolve(once, event) == once
            state = once
    # the same object back when nothing changes: an aggregate table writes nothing
    user = given_user()
    assert rules.evolve_user(user, events[0]) is user


def test_created_again_keeps_the_first_user() -> None:
    user = given_user()
    again = UserCreated(**STAMP.envelope("u2"), username="ann", role="viewer", password_hash="x")
    assert rules.evolve_user(user, again) is user


def test_password_is_its_own_aggregate() -> None:
    s = STAMP
    created = UserCreated(**s.envelope("u"), username="ann", role="admin", password_hash="h")
    changed = PasswordSet(**s.envelope("p"), username="ann", password_hash="h2")
    state = fold(rules.evolve_password, [created, changed])
    assert state == rules.PasswordState(username="ann", password_hash="h2")
    assert not hasattr(given_user(), "password_hash")


def test_a_token_keeps_its_digest_and_expiry_and_is_revoked_for_good() -> None:
    s = STAMP
    issued = TokenIssued(
        **s.envelope("t"),
        username="ann",
        token_id="t1",
        token_sha256="d",
        kind="session",
        expires_at="2030-01-01T00:00:00Z",
    )
    token = fold(rules.evolve_token, [issued])
    assert token is not None and token.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    revoked = rules.evolve_token(
        token, TokenRevoked(**s.envelope("x"), username="ann", token_id="t1")
    )
    assert revoked is not None and revoked.revoked
    assert rules.evolve_token(revoked, issued) is revoked


def test_token_refusals() -> None:
    token = TokenState(
        token_id="t1",
        username="vic",
        token_sha256="h",
        kind="session",
        created_at=T0,
        expires_at=T0,
    )
    viewer = UserState(username="vic", role="viewer", created_at=T0)
    assert rules.token_refusal(None, None, T0) == "unknown token"
    assert rules.token_refusal(token, viewer, T0 - timedelta(seconds=1)) is None
    assert rules.token_refusal(token, viewer, T0) == "token expired"
    api = msgspec.structs.replace(token, kind="api", expires_at=None)
    assert rules.token_refusal(msgspec.structs.replace(api, revoked=True), viewer, T0) == (
        "token revoked"
    )
    assert rules.token_refusal(api, None, T0) == "unknown user"
    disabled = msgspec.structs.replace(viewer, disabled=True)
    assert rules.token_refusal(api, disabled, T0) == "user disabled"


def test_create_user_refuses_taken_and_malformed_names() -> None:
    args = {"role": "viewer", "password_hash": "h", "stamp": STAMP}
    (created,) = rules.create_user(None, username="bob", **args)  # type: ignore[arg-type]
    assert isinstance(created, UserCreated)
    with pytest.raises(Conflict):
        rules.create_user(given_user(), username="ann", **args)  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        rules.create_user(None, username="-bad", **args)  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        rules.create_user(None, username="bob", role="god", password_hash="h", stamp=STAMP)
    with pytest.raises(Invalid):
        rules.check_password("short")


def test_the_last_active_admin_stays_an_admin() -> None:
    admin = given_user()
    with pytest.raises(Conflict):
        rules.update_user(
            admin, UpdateUser(disabled=True), password_hash=None, active_admins=1, stamp=STAMP
        )
    (changed,) = rules.update_user(
        admin, UpdateUser(role="viewer"), password_hash=None, active_admins=2, stamp=STAMP
    )
    assert isinstance(changed, RoleChanged)
    with pytest.raises(NotFound):
        rules.update_user(None, UpdateUser(), password_hash=None, active_admins=1, stamp=STAMP)


def test_tokens_are_issued_to_active_users_and_revoked_once() -> None:
    disabled = given_user(UserDisabled(**STAMP.envelope("d"), username="ann"))
    args = {"token_id": "t", "token_sha256": "d", "kind": "api", "expires_at": None}
    with pytest.raises(NotFound):
        rules.issue_token(disabled, label="", stamp=STAMP, **args)  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        rules.issue_token(given_user(), label="x" * 201, stamp=STAMP, **args)  # type: ignore[arg-type]
    (issued,) = rules.issue_token(given_user(), label="ci", stamp=STAMP, **args)  # type: ignore[arg-type]
    token = rules.evolve_token(None, issued)
    with pytest.raises(NotFound):
        rules.revoke_token(token, username="eve", is_admin=False, stamp=STAMP)
    (revoked,) = rules.revoke_token(token, username="ann", is_admin=False, stamp=STAMP)
    gone = rules.evolve_token(token, revoked)
    assert rules.revoke_token(gone, username="ann", is_admin=False, stamp=STAMP) == []


def test_bootstrap_only_on_an_empty_platform() -> None:
    args = {"password_hash": "argon", "token_id": "t", "token_sha256": "f" * 64, "stamp": STAMP}
    assert rules.bootstrap_admin(3, **args) == []  # type: ignore[arg-type]
    created, token = rules.bootstrap_admin(0, **args)  # type: ignore[arg-type]
    assert isinstance(created, UserCreated) and created.role == "admin"
    assert isinstance(token, TokenIssued) and token.token_sha256 == "f" * 64
