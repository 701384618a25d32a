"""Old credentials end through real calls: a new password ends the user's sessions (their API
tokens stay), a disable ends every session and API token, and an enable brings none back."""

from __future__ import annotations

import uuid

import httpx

from cvops.testing.gateway import PASSWORD, Platform

NEW_PASSWORD = "a-brand-new-password"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _viewer(client: httpx.AsyncClient, platform: Platform) -> tuple[str, str, str]:
    """A new viewer with a session token and an API token."""
    name = f"rv-{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": PASSWORD, "role": "viewer"}
    created = await client.post("/users", json=body, headers=platform.headers("admin"))
    assert created.status_code == 201, created.text
    login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
    session = login.json()["token"]
    api = await client.post("/auth/tokens", json={"label": "ci"}, headers=_bearer(session))
    assert api.status_code == 201, api.text
    return name, session, api.json()["token"]


async def test_a_password_reset_ends_the_old_sessions_and_keeps_api_tokens(
    platform: Platform,
) -> None:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        name, session, api = await _viewer(client, platform)
        assert (await client.get("/auth/me", headers=_bearer(session))).status_code == 200
        reset = await client.patch(
            f"/users/{name}", json={"password": NEW_PASSWORD}, headers=platform.headers("admin")
        )
        assert reset.status_code == 200, reset.text
        old = await client.get("/auth/me", headers=_bearer(session))
        assert old.status_code == 401 and old.json()["detail"] == "token revoked"
        assert (await client.get("/auth/me", headers=_bearer(api))).status_code == 200
        listed = (await client.get("/auth/tokens", headers=_bearer(api))).json()
        assert [t["revoked"] for t in listed] == [False]
        login = await client.post("/auth/login", json={"username": name, "password": NEW_PASSWORD})
        assert (
            await client.get("/auth/me", headers=_bearer(login.json()["token"]))
        ).status_code == 200


async def test_a_disable_then_enable_brings_no_old_token_back(platform: Platform) -> None:
    admin = platform.headers("admin")
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        name, session, api = await _viewer(client, platform)
        off = await client.patch(f"/users/{name}", json={"disabled": True}, headers=admin)
        assert off.status_code == 200, off.text
        on = await client.patch(f"/users/{name}", json={"disabled": False}, headers=admin)
        assert on.status_code == 200 and on.json()["disabled"] is False
        for token in (api, session):
            old = await client.get("/auth/me", headers=_bearer(token))
            assert old.status_code == 401 and old.json()["detail"] == "token revoked"
        login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        assert (
            await client.get("/auth/me", headers=_bearer(login.json()["token"]))
        ).status_code == 200


async def test_your_own_new_password_keeps_the_session_you_set_it_with(
    platform: Platform,
) -> None:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        name = f"ra-{uuid.uuid4().hex[:8]}"
        body = {"username": name, "password": PASSWORD, "role": "admin"}
        created = await client.post("/users", json=body, headers=platform.headers("admin"))
        assert created.status_code == 201, created.text
        creds = {"username": name, "password": PASSWORD}
        elsewhere = (await client.post("/auth/login", json=creds)).json()["token"]
        here = (await client.post("/auth/login", json=creds)).json()["token"]
        changed = await client.patch(
            f"/users/{name}", json={"password": NEW_PASSWORD}, headers=_bearer(here)
        )
        assert changed.status_code == 200, changed.text
        assert (await client.get("/auth/me", headers=_bearer(here))).status_code == 200
        assert (await client.get("/auth/me", headers=_bearer(elsewhere))).status_code == 401
