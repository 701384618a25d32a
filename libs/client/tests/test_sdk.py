"""The typed SDK against a stand-in gateway: bodies, errors, streaming uploads, SSE."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import msgspec
import pytest

from cvops.client import Client, CvopsError, GatewayUnreachable, parse_sse
from cvops.contracts.api import UserView
from cvops.testing.client import ADMIN_PASSWORD, FakeGateway, sse


@pytest.fixture
def client(transport: httpx.MockTransport) -> Client:
    return Client("http://gw.test", transport=transport)


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def test_login_keeps_the_token_for_later_calls(client: Client, gateway: FakeGateway) -> None:
    session = client.login("admin", ADMIN_PASSWORD)
    me = client.me()
    assert session.role == "admin" and session.username == "admin"
    assert isinstance(me, UserView) and me.username == "admin"
    assert gateway.requests[-1].headers["authorization"] == f"Bearer {session.token}"


def test_error_body_becomes_cvops_error_with_status_code_and_detail(client: Client) -> None:
    with pytest.raises(CvopsError) as caught:
        client.login("admin", "wrong")
    err = caught.value
    assert (err.status, err.code) == (401, "invalid_credentials")
    assert err.detail == "wrong username or password"
    assert err.message == "invalid_credentials: wrong username or password"


def test_a_body_that_is_not_the_error_shape_still_gives_a_cvops_error(
    client: Client, gateway: FakeGateway
) -> None:
    gateway.outage = httpx.Response(502, content=b"<html>Bad Gateway</html>")
    with pytest.raises(CvopsError) as caught:
        client.list_models()
    assert caught.value.status == 502
    assert caught.value.code == "http_502"
    assert "Bad Gateway" in str(caught.value.detail)


def test_an_unexpected_body_shape_is_a_bad_response_not_a_crash(
    client: Client, gateway: FakeGateway
) -> None:
    gateway.outage = httpx.Response(200, json={"items": []})
    with pytest.raises(CvopsError) as caught:
        client.list_users()
    assert caught.value.code == "bad_response"


def test_model_upload_streams_the_file_in_chunks_and_reports_progress(
    client: Client, gateway: FakeGateway, tmp_path: Path
) -> None:
    client.login("admin", ADMIN_PASSWORD)
    path = _file(tmp_path, "net.onnx", 300_000)
    seen: list[tuple[int, int]] = []

    result = client.upload_model(
        path,
        "net",
        architecture="resnet18",
        num_classes=10,
        input_shape=(3, 32, 32),
        description="first",
        progress=lambda done, total: seen.append((done, total)),
    )

    assert result.status == "validated" and result.version == 1 and result.kind == "model"
    upload = gateway.uploads[-1]
    assert upload.content == path.read_bytes() and upload.filename == "net.onnx"
    assert upload.fields == {
        "name": "net",
        "description": "first",
        "architecture": "resnet18",
        "num_classes": "10",
        "input_shape": "3,32,32",
    }
    assert len(seen) >= 5  # 64 KiB reads, not one read of the whole file
    assert all(total == 300_000 for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (300_000, 300_000)
    assert max(b - a for (a, _), (b, _) in zip([(0, 0), *seen], seen, strict=False)) <= 64 * 1024


def test_a_viewers_upload_is_refused_before_the_body_is_sent(
    client: Client, gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.users["val"] = {"password": "val-pw-123", "role": "viewer", "disabled": False}
    client.login("val", "val-pw-123")
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))

    for upload in (
        lambda: client.upload_model(_file(tmp_path, "m.onnx", 100_000), "m", progress=progress),
        lambda: client.upload_dataset(_file(tmp_path, "d.zip", 100_000), "d", progress=progress),
    ):
        with pytest.raises(CvopsError) as caught:
            upload()
        assert (caught.value.status, caught.value.code) == (403, "forbidden")
        assert caught.value.detail == "role 'viewer' may not do this (needs 'write')"
    assert seen == [] and gateway.uploads == []
    assert [r.method for r in gateway.requests if r.url.path != "/auth/me"] == ["POST"]  # login


def test_rejected_and_pending_uploads_are_results_not_exceptions(
    client: Client, tmp_path: Path
) -> None:
    client.login("admin", ADMIN_PASSWORD)
    rejected = client.upload_model(_file(tmp_path, "bad.pt", 10), "evil")
    pending = client.upload_dataset(_file(tmp_path, "slow.zip", 10), "big", seed=7)
    assert rejected.status == "rejected" and rejected.reason
    assert pending.status == "pending" and pending.correlation_id == "corr-2"
    assert client.show_upload(rejected.upload_id) == rejected


def test_a_refused_upload_form_raises_the_error_shape(client: Client, tmp_path: Path) -> None:
    client.login("admin", ADMIN_PASSWORD)
    with pytest.raises(CvopsError) as caught:
        client.upload_model(_file(tmp_path, "m.onnx", 10), "")
    assert (caught.value.status, caught.value.code) == (422, "validation_error")


def test_dataset_upload_sends_seed_and_description(
    client: Client, gateway: FakeGateway, tmp_path: Path
) -> None:
    client.login("admin", ADMIN_PASSWORD)
    result = client.upload_dataset(_file(tmp_path, "shapes.zip", 1000), "shapes", "toy", seed=3)
    assert result.status == "validated"
    assert gateway.uploads[-1].fields == {"name": "shapes", "description": "toy", "seed": "3"}
    assert client.show_dataset("shapes").seed == 3
    assert [d.name for d in client.list_datasets()] == ["shapes"]


def test_update_user_sends_only_the_fields_to_change(client: Client, gateway: FakeGateway) -> None:
    client.login("admin", ADMIN_PASSWORD)
    client.create_user("bob", "pw-bob-123", "viewer")
    updated = client.update_user("bob", role="engineer")
    assert updated.role == "engineer"
    assert msgspec.json.decode(gateway.requests[-1].content) == {"role": "engineer"}
    assert client.show_user("bob") == updated


def test_tokens_create_list_revoke(client: Client) -> None:
    client.login("admin", ADMIN_PASSWORD)
    created = client.create_token("ci")
    client.revoke_token(created.token_id)
    [listed] = client.list_tokens()
    assert listed.token_id == created.token_id and listed.revoked


def test_models_versions_stage_and_artifact_download(
    client: Client, gateway: FakeGateway, tmp_path: Path
) -> None:
    client.login("admin", ADMIN_PASSWORD)
    for _ in range(2):
        client.upload_model(_file(tmp_path, "m.onnx", 100), "m")
    assert [m.latest_version for m in client.list_models()] == [2]
    assert [v.version for v in client.list_versions("m")] == [1, 2]
    assert client.show_model("m").latest_version == 2
    assert client.set_stage("m", 2, "production").stage == "production"
    assert client.show_version("m", 2).stage == "production"

    sizes: list[int] = []
    written = client.download_artifact("m", 2, tmp_path, progress=lambda d, _t: sizes.append(d))
    assert written == tmp_path / "m-v2.onnx"
    assert written.read_bytes() == gateway.artifact and sizes[-1] == len(gateway.artifact)

    target = tmp_path / "out.onnx"
    with pytest.raises(CvopsError) as caught:
        client.download_artifact("m", 9, target)
    assert caught.value.status == 404
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def test_events_yields_sequence_type_and_decoded_event(
    client: Client, gateway: FakeGateway
) -> None:
    gateway.events["c1"] = sse(
        ": keep-alive",
        'id: 7\nevent: registry.model_upload_received.v1\ndata: {"model_name": "m"}',
        "id: 9\nevent: registry.model_registered.v1\n"
        'data: {"model_name": "m",\ndata: "version": 1}',
    )
    client.login("admin", ADMIN_PASSWORD)
    got = list(client.events("c1"))
    assert got == [
        (7, "registry.model_upload_received.v1", {"model_name": "m"}),
        (9, "registry.model_registered.v1", {"model_name": "m", "version": 1}),
    ]
    with pytest.raises(CvopsError) as caught:
        list(client.events("nope"))
    assert caught.value.status == 404


def test_sse_parser_follows_the_event_stream_rules() -> None:
    lines = [
        "retry: 1000",
        ":comment",
        "id: 3",
        "event: a.b.v1",
        "data:{}",  # no space after the colon is allowed
        "",
        "",  # a second blank line dispatches nothing
        "data: not json",
        "",
        "id: 4",
        "data: [1, 2]",
        "",
        "id: 5",
        'data: {"unfinished": true}',  # no blank line: the stream ended mid-message
    ]
    messages = list(parse_sse(lines))
    assert [(m.seq, m.type, m.data) for m in messages] == [
        (3, "a.b.v1", {}),
        (0, "message", {"text": "not json"}),
        (4, "message", {"value": [1, 2]}),
    ]


def test_sse_messages_without_data_are_not_dispatched() -> None:
    lines = [
        ": keep-alive",  # the gateway's keep-alive: a comment and an empty data line
        "data: ",
        "",
        "id: 8",
        "event: a.b.v1",  # no data line at all
        "",
        "data:",
        "data:   ",
        "",
        "id: 9",
        "event: a.c.v1",
        'data: {"x": 1}',
        "",
    ]
    assert [(m.seq, m.type, m.data) for m in parse_sse(lines)] == [(9, "a.c.v1", {"x": 1})]


def test_health_reports_ready(client: Client) -> None:
    assert client.health().status == "ok"


def test_a_closed_port_raises_gateway_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(GatewayUnreachable) as err:
        client.health()
    assert err.value.url == f"http://127.0.0.1:{port}"
