"""NATS as the launcher writes it: every service its own user and permissions, identity's
events in a stream only the identity holders read, an integrator who may only subscribe.

Each test talks to a real nats-server started with the launcher's authorization block.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from cvops.contracts import encode
from cvops.contracts.identity import TokenIssued
from cvops.contracts.registry import DatasetRejected
from cvops.core import IDENTITY_STREAM, STREAM, Bus, load_settings
from cvops.core.nats_auth import (
    INTEGRATOR,
    SERVICES,
    authorization_block,
    credentials,
    deployment_block,
    load_or_create_passwords,
    users_file,
)
from cvops.core.natsd import start_nats, stop_process

DENIED_S = 0.5  # a refused request is dropped by the server: the caller times out


class Server:
    def __init__(self, url: str, home: Path, passwords: dict[str, str]) -> None:
        self.url = url
        self.home = home
        self.passwords = passwords

    def settings(self, user: str) -> object:
        return load_settings(
            {}, nats_url=self.url, nats_user=user, nats_password=self.passwords[user]
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    passwords = load_or_create_passwords(home)
    proc, port = start_nats(home / "nats", authorization=authorization_block(passwords))
    try:
        yield Server(f"nats://127.0.0.1:{port}", home, passwords)
    finally:
        stop_process(proc)


@pytest.fixture
async def gateway_bus(server: Server) -> AsyncIterator[Bus]:
    bus = await Bus.connect(server.settings("gateway"), name="gateway")  # type: ignore[arg-type]
    yield bus
    await bus.close()


def _rejected(actor: str, upload_id: str) -> DatasetRejected:
    return DatasetRejected(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        actor=actor,
        correlation_id=upload_id,
        upload_id=upload_id,
        dataset_name="d",
        reason="test",
    )


def _token_event(username: str) -> TokenIssued:
    return TokenIssued(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        actor="attacker",
        correlation_id="forged",
        username=username,
        token_id=uuid.uuid4().hex,
        token_sha256="0" * 64,
    )


async def _connect(server: Server, user: str) -> nats.NATS:
    async def quiet(_err: Exception) -> None:
        return None

    return await nats.connect(
        server.url,
        user=user,
        password=server.passwords[user],
        allow_reconnect=False,
        error_cb=quiet,
    )


def test_passwords_are_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_passwords(tmp_path)
    assert set(first) == {*SERVICES, INTEGRATOR}
    assert len(set(first.values())) == len(first)  # each user its own
    assert load_or_create_passwords(tmp_path) == first
    assert users_file(tmp_path).stat().st_mode & 0o077 == 0
    assert credentials(tmp_path, "trainer") == ("trainer", first["trainer"])
    assert credentials(tmp_path, "nobody") is None


def test_the_deployment_configs_read_passwords_from_the_environment() -> None:
    block = deployment_block()
    for user in (*SERVICES, INTEGRATOR):
        assert f'user: "{user}"' in block
    assert "password: $CVOPS_NATS_PASSWORD_INFERENCE_ROUTER," in block


async def test_a_connection_without_credentials_is_refused(server: Server) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_wrong_password_is_refused(server: Server) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(server.url, user="gateway", password="guess", allow_reconnect=False)


async def test_identity_events_go_to_their_own_stream(gateway_bus: Bus) -> None:
    published = await gateway_bus.publish(_token_event("ann"))
    msg = await gateway_bus.js.get_msg(IDENTITY_STREAM, published.seq)
    assert msg.subject.startswith("cvops.sec.identity.")
    with pytest.raises(nats.js.errors.NotFoundError):  # nothing of it where integrators read
        await gateway_bus.js.get_last_msg(STREAM, "cvops.evt.identity.>")


async def test_a_service_cannot_forge_another_context_s_event(
    server: Server, gateway_bus: Bus
) -> None:
    """The attack: a trainer (or any process with its user) issuing an admin token."""
    nc = await _connect(server, "trainer")
    try:
        forged = _token_event("admin")
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await nc.jetstream().publish(
                forged.subject, encode(forged), stream=IDENTITY_STREAM, timeout=DENIED_S
            )
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            rejected = _rejected("trainer", "u-forged")
            await nc.jetstream().publish(
                rejected.subject, encode(rejected), stream=STREAM, timeout=DENIED_S
            )
    finally:
        await nc.close()
    with pytest.raises(nats.js.errors.NotFoundError):
        await gateway_bus.js.get_last_msg(IDENTITY_STREAM, "cvops.sec.identity.admin.>")


async def test_only_the_identity_holders_read_the_identity_stream(
    server: Server, gateway_bus: Bus
) -> None:
    await gateway_bus.publish(_token_event("bob"))
    for user in ("registry", "trainer", "converter", "benchmarker", "reporter"):
        nc = await _connect(server, user)
        try:
            js = nc.jetstream(timeout=DENIED_S)
            with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
                await js.get_last_msg(IDENTITY_STREAM, "cvops.sec.>")
            with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
                config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
                sub = await js.pull_subscribe("", stream=IDENTITY_STREAM, config=config)
                await sub.fetch(1, timeout=DENIED_S)
        finally:
            await nc.close()
    for user in ("gateway", "inference-router"):
        nc = await _connect(server, user)
        try:
            msg = await nc.jetstream().get_last_msg(IDENTITY_STREAM, "cvops.sec.identity.bob.>")
            assert msgspec.json.decode(msg.data)["username"] == "bob"
        finally:
            await nc.close()


async def test_no_service_may_delete_or_change_a_stream(server: Server, gateway_bus: Bus) -> None:
    nc = await _connect(server, "gateway")
    try:
        js = nc.jetstream(timeout=DENIED_S)
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await js.delete_stream(STREAM)
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await js.purge_stream(IDENTITY_STREAM)
    finally:
        await nc.close()
    assert (await gateway_bus.js.stream_info(STREAM)).config.name == STREAM


async def test_the_integrator_only_subscribes_to_events(server: Server, gateway_bus: Bus) -> None:
    nc = await _connect(server, INTEGRATOR)
    try:
        seen: list[str] = []
        got = asyncio.Event()

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.subject)
            got.set()

        await nc.subscribe("cvops.evt.>", cb=on_msg)
        secrets: list[str] = []

        async def on_secret(msg: nats.aio.msg.Msg) -> None:
            secrets.append(msg.subject)

        await nc.subscribe("cvops.sec.>", cb=on_secret)  # refused by the server
        await nc.flush()
        await gateway_bus.publish(_token_event("carol"))  # identity: not for integrators
        rejected = _rejected("gateway", "u-integrator")
        await gateway_bus.publish(rejected)
        await asyncio.wait_for(got.wait(), 5)
        assert seen == [rejected.subject]
        assert secrets == []
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await nc.jetstream(timeout=DENIED_S).stream_info(STREAM)
    finally:
        await nc.close()


async def test_each_service_writes_only_its_own_presence_and_only_the_gateway_reads_it(
    server: Server, gateway_bus: Bus
) -> None:
    """KV ``cvops-services``: a service's user writes keys under its own name (its instances'
    status), never another service's; reading every key is the gateway's (``GET /system``)."""
    registry = await Bus.connect(server.settings("registry"), name="registry")  # type: ignore[arg-type]
    try:
        await registry.presence.put("registry.host-1", b'{"health": "ready"}')
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await asyncio.wait_for(registry.presence.put("trainer.host-1", b"{}"), DENIED_S)
        with pytest.raises((nats.errors.TimeoutError, TimeoutError, nats.js.errors.Error)):
            await asyncio.wait_for(registry.presence.get("registry.host-1"), DENIED_S)
    finally:
        await registry.close()
    entry = await gateway_bus.presence.get("registry.host-1")
    assert entry.value == b'{"health": "ready"}'
