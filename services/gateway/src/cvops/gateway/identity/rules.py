"""Identity decisions live in ``cvops.domain.identity``; this module names them for the gateway."""

from __future__ import annotations

from cvops.domain.identity import (
    BOOTSTRAP_ADMIN,
    MIN_PASSWORD_LENGTH,
    TokenState,
    UserState,
    bootstrap_admin,
    check_password,
    create_user,
    issue_token,
    revoke_token,
    token_refusal,
    update_user,
)

__all__ = [
    "BOOTSTRAP_ADMIN",
    "MIN_PASSWORD_LENGTH",
    "TokenState",
    "UserState",
    "bootstrap_admin",
    "check_password",
    "create_user",
    "issue_token",
    "revoke_token",
    "token_refusal",
    "update_user",
]
