"""No secret in any log: the gateway process (at debug level) and its NATS server go through a
first-start bootstrap, sign-ins (right and wrong), API tokens, a new user, password changes,
logout, revocation and a forged token; afterwards neither log holds any password, token,
token digest or password hash that passed through them.

The secrets to look for are collected as they happen (what the client sent and got) and from
the event log itself (the argon2 hashes), so a new kind of hash shows up here too.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats.js.errors
import pytest

from cvops.core import Bus
from cvops.gateway.auth import token_digest
from cvops.testing.gateway_process import GatewayProcess

TOKEN_SHAPE = re.compile(r"cvops_[A-Za-z0-9_-]{20,}")
ARGON2 = re.compile(rb"\$argon2id?\$[^\"\\\s]+")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, log_level="debug")
    try:
        yield process.start()
    finally:
        process.stop()


def stream_hashes(gateway: GatewayProcess) -> set[str]:
    """Every argon2 hash in every stream of the gateway's NATS (the identity events')."""

    async def read() -> set[str]:
        bus = await Bus.connect(gateway.settings, name="security-test")  # type: ignore[arg-type]
        found: set[str] = set()
        try:
            for stream in await bus.js.streams_info():
                if not stream.state.messages:
                    continue
                for seq in range(max(stream.state.first_seq, 1), stream.state.last_seq + 1):
                    try:
                        message = await bus.js.get_msg(stream.config.name, seq)
                    except nats.js.errors.NotFoundError:
                        continue  # a deleted message
                    found.update(m.decode() for m in ARGON2.findall(message.data or b""))
        finally:
            await bus.close()
        return found

    return asyncio.run(read())


def test_no_password_token_or_hash_reaches_a_log(gateway: GatewayProcess) -> None:
    creds = gateway.credentials
    passwords = {creds["password"]}
    tokens = {creds["token"]}
    url = gateway.url
    with httpx.Client(base_url=url, timeout=60) as client:

        def login(username: str, password: str, expect: int = 200) -> str:
            response = client.post("/auth/login", json={"username": username, "password": password})
            assert response.status_code == expect, response.text
            return str(response.json()["token"]) if expect == 200 else ""

        admin_session = {"Authorization": f"Bearer {login('admin', creds['password'])}"}
        tokens.add(admin_session["Authorization"].removeprefix("Bearer "))
        for attempt in range(6):  # the sixth is throttled (429)
            wrong = f"wrong-{secrets.token_hex(8)}"
            passwords.add(wrong)
            login("nobody", wrong, expect=401 if attempt < 5 else 429)

        api = client.post("/auth/tokens", json={"label": "ci"}, headers=admin_session).json()
        tokens.add(api["token"])

        first, second, third = (f"pw-{secrets.token_hex(10)}" for _ in range(3))
        passwords |= {first, second, third}
        made = client.post(
            "/users",
            json={"username": "dana", "password": first, "role": "engineer"},
            headers=admin_session,
        )
        assert made.status_code == 201, made.text
        dana = login("dana", first)
        tokens.add(dana)
        changed = client.patch("/users/dana", json={"password": second}, headers=admin_session)
        assert changed.status_code == 200, changed.text
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {dana}"}).status_code == 401
        )
        tokens.add(login("dana", second))
        own = client.patch("/users/admin", json={"password": third}, headers=admin_session)
        assert own.status_code == 200, own.text
        tokens.add(login("admin", third))

        forged = "cvops_" + secrets.token_urlsafe(32)
        tokens.add(forged)
        refused = client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        gone = client.delete(f"/auth/tokens/{api['token_id']}", headers=admin_session)
        assert gone.status_code == 204
        assert client.post("/auth/logout", headers=admin_session).status_code == 204
    hashes = stream_hashes(gateway)
    gateway.stop()  # every line flushed

    digests = {token_digest(t) for t in tokens}
    assert len(hashes) >= 4, "the argon2 hashes of the log were not found: nothing to look for"
    logs = {"gateway": gateway.log, "nats": gateway.nats_log}
    text = {name: path.read_text(errors="replace") for name, path in logs.items()}
    # the logs were written through all of the above, from the bootstrap to the shutdown
    for line in ("admin_bootstrapped", "gateway_started", "Finished server process"):
        assert line in text["gateway"], text["gateway"]
    assert "Server is ready" in text["nats"]
    for name, content in text.items():
        for kind, needles in (
            ("password", passwords),
            ("token", tokens),
            ("token digest", digests),
            ("password hash", hashes),
        ):
            leaked = [n for n in needles if n in content]
            assert not leaked, f"{kind} in the {name} log: {leaked[0][:12]}…"
        assert not TOKEN_SHAPE.search(content), f"something token-shaped in the {name} log"
        assert "$argon2" not in content, f"an argon2 hash in the {name} log"
