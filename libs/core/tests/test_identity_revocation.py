"""The router's identity tables (users and tokens, no password hash) see the revocations
that a password change and a disable decide, so its token check refuses the old tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.api import UpdateUser
from cvops.contracts.identity import TokenIssued, UserCreated
from cvops.core import sqlite_engine
from cvops.core.identity import Identity
from cvops.domain import identity as rules

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def stamp(hours: int) -> Stamp:
    return Stamp(now=T0 + timedelta(hours=hours), actor="root", correlation_id=f"c{hours}")


def test_router_tables_refuse_tokens_after_a_password_change_and_a_disable_enable(
    tmp_path: Path,
) -> None:
    metadata = MetaData()
    identity = Identity(metadata, passwords=False)  # as the inference router keeps it
    engine = sqlite_engine(tmp_path / "router.sqlite")
    metadata.create_all(engine)
    s0 = stamp(0)
    given: list[Event] = [
        UserCreated(**s0.envelope("u"), username="ann", role="viewer", password_hash="h"),
        TokenIssued(
            **s0.envelope("s"),
            username="ann",
            token_id="s1",
            token_sha256="sha-s1",
            kind="session",
            expires_at=(T0 + timedelta(hours=12)).isoformat(),
        ),
        TokenIssued(**s0.envelope("a"), username="ann", token_id="a1", token_sha256="sha-a1"),
    ]

    def apply(events: list[Event]) -> None:
        with Session(engine) as s, s.begin():
            for event in events:
                identity.apply(s, event)

    def decide(change: UpdateUser, password_hash: str | None, at: Stamp) -> list[Event]:
        with Session(engine) as s:
            user = identity.user(s, "ann")
            tokens = identity.tokens.states(s, username="ann")
        return rules.update_user(
            user, change, password_hash=password_hash, active_admins=1, stamp=at, tokens=tokens
        )

    def refusal(digest: str, at: Stamp) -> str | None:
        with Session(engine) as s:
            token = identity.token_by_digest(s, digest)
            user = identity.user(s, token.username) if token else None
        return rules.token_refusal(token, user, at.now)

    apply(given)
    assert refusal("sha-s1", stamp(1)) is None and refusal("sha-a1", stamp(1)) is None

    apply(decide(UpdateUser(password="x" * 8), "h2", stamp(1)))
    assert refusal("sha-s1", stamp(2)) == "token revoked"
    assert refusal("sha-a1", stamp(2)) is None  # API tokens outlive a new password

    apply(decide(UpdateUser(disabled=True), None, stamp(2)))
    apply(decide(UpdateUser(disabled=False), None, stamp(3)))
    assert refusal("sha-a1", stamp(4)) == "token revoked"
