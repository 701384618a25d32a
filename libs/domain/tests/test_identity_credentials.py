"""Credentials end with the events that change them: a new password revokes the user's
sessions, a disable revokes every session and API token (an enable brings none back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cvops.contracts import Event, Stamp
from cvops.contracts.api import UpdateUser
from cvops.contracts.identity import (
    PasswordSet,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.domain import identity as rules
from cvops.domain.identity import TokenState, UserState

T0 = datetime(2026, 5, 1, tzinfo=UTC)
LATER = Stamp(now=T0 + timedelta(hours=1), actor="root", correlation_id="c2")
AGAIN = Stamp(now=T0 + timedelta(hours=2), actor="root", correlation_id="c3")


def issued(token_id: str, kind: str, *, username: str = "ann", hours: int | None = None) -> Event:
    stamp = Stamp(now=T0, actor=username, correlation_id=f"login-{token_id}")
    expires = (T0 + timedelta(hours=hours)).isoformat() if hours is not None else None
    return TokenIssued(
        **stamp.envelope("t"),
        username=username,
        token_id=token_id,
        token_sha256=f"sha-{token_id}",
        kind=kind,  # type: ignore[arg-type]
        expires_at=expires,
    )


def given() -> tuple[UserState, dict[str, TokenState]]:
    """ann (viewer) with: two live sessions, an expired one, a revoked one, two API tokens;
    bob with a live session."""
    stamp = Stamp(now=T0, actor="root", correlation_id="c1")
    user = rules.evolve_user(
        None, UserCreated(**stamp.envelope("u"), username="ann", role="viewer", password_hash="h")
    )
    assert user is not None
    events = [
        issued("s1", "session", hours=12),
        issued("s2", "session", hours=12),
        issued("s-old", "session", hours=1),  # expired at LATER
        issued("s-gone", "session", hours=12),
        TokenRevoked(**stamp.envelope("x"), username="ann", token_id="s-gone"),
        issued("a1", "api"),
        issued("a2", "api"),
        issued("bob-s", "session", username="bob", hours=12),
    ]
    tokens: dict[str, TokenState] = {}
    for event in events:
        key = rules.token_key(event)
        assert key is not None
        folded = rules.evolve_token(tokens.get(key), event)
        assert folded is not None
        tokens[key] = folded
    return user, tokens


def fold(
    user: UserState, tokens: dict[str, TokenState], events: list[Event]
) -> tuple[UserState, dict[str, TokenState]]:
    """The events into the user and the tokens, as every projection folds them."""
    for event in events:
        folded = rules.evolve_user(user, event)
        assert folded is not None
        user = folded
        key = rules.token_key(event)
        if key is not None:
            token = rules.evolve_token(tokens.get(key), event)
            assert token is not None
            tokens = {**tokens, key: token}
    return user, tokens


def revoked_ids(events: list[Event]) -> list[str]:
    return [e.token_id for e in events if isinstance(e, TokenRevoked)]


def test_a_new_password_revokes_the_live_sessions_and_keeps_api_tokens() -> None:
    user, tokens = given()
    events = rules.update_user(
        user,
        UpdateUser(password="ignored-here"),
        password_hash="h2",
        active_admins=1,
        stamp=LATER,
        tokens=tokens.values(),
    )
    assert isinstance(events[0], PasswordSet)
    assert revoked_ids(events) == ["s1", "s2"]
    user, tokens = fold(user, tokens, events)
    now = LATER.now
    assert rules.token_refusal(tokens["s1"], user, now) == "token revoked"
    assert rules.token_refusal(tokens["s2"], user, now) == "token revoked"
    assert rules.token_refusal(tokens["a1"], user, now) is None
    assert rules.token_refusal(tokens["bob-s"], user, now) is None  # (bob's user aside)


def test_changing_your_own_password_keeps_the_session_you_change_it_with() -> None:
    user, tokens = given()
    events = rules.update_user(
        user,
        UpdateUser(password="ignored-here"),
        password_hash="h2",
        active_admins=1,
        stamp=LATER,
        tokens=tokens.values(),
        keep_token_id="s2",
    )
    assert revoked_ids(events) == ["s1"]


def test_a_disable_revokes_every_live_token_and_an_enable_brings_none_back() -> None:
    user, tokens = given()
    off = rules.update_user(
        user,
        UpdateUser(disabled=True),
        password_hash=None,
        active_admins=1,
        stamp=LATER,
        tokens=tokens.values(),
    )
    assert isinstance(off[0], UserDisabled)
    assert revoked_ids(off) == ["a1", "a2", "s1", "s2"]
    user, tokens = fold(user, tokens, off)
    on = rules.update_user(
        user,
        UpdateUser(disabled=False),
        password_hash=None,
        active_admins=1,
        stamp=AGAIN,
        tokens=tokens.values(),
    )
    assert [type(e) for e in on] == [UserEnabled]
    user, tokens = fold(user, tokens, on)
    assert not user.disabled
    # the rule the gateway's middleware and the router's proxy both apply
    for token_id in ("s1", "s2", "a1", "a2"):
        assert rules.token_refusal(tokens[token_id], user, AGAIN.now) == "token revoked"


def test_role_changes_and_enables_revoke_nothing() -> None:
    user, tokens = given()
    events = rules.update_user(
        user,
        UpdateUser(role="engineer"),
        password_hash=None,
        active_admins=1,
        stamp=LATER,
        tokens=tokens.values(),
    )
    assert revoked_ids(events) == []


def test_revocations_are_the_same_events_when_the_decision_is_retried() -> None:
    user, tokens = given()
    change = UpdateUser(disabled=True)
    first, second = (
        rules.update_user(
            user, change, password_hash=None, active_admins=1, stamp=LATER, tokens=tokens.values()
        )
        for _ in range(2)
    )
    assert [e.event_id for e in first] == [e.event_id for e in second]
