"""The `cvops` command line against a stand-in gateway: tables, --json, exit codes, config."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from click.testing import CliRunner, Result

from cvops.client.cli import cli
from cvops.contracts.api import ModelVersionView, ModelView, UploadResult, UserView
from cvops.testing.client import ADMIN_PASSWORD, FakeGateway, sse

Invoke = Callable[..., Result]


def _login(cvops: Invoke, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    result = cvops("login", "--username", username, "--password", password)
    assert result.exit_code == 0, result.output


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_login_stores_url_and_token_in_a_file_only_the_owner_can_read(
    cvops: Invoke, config_file: Path
) -> None:
    result = cvops("login", "--username", "admin", "--password", ADMIN_PASSWORD)

    assert result.exit_code == 0
    assert "logged in to http://127.0.0.1:8080 as admin (admin)" in result.stdout
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    stored = msgspec.json.decode(config_file.read_bytes())
    assert stored["url"] == "http://127.0.0.1:8080"
    assert stored["token"].startswith("session-admin")
    assert ADMIN_PASSWORD not in config_file.read_text()


def test_login_rewrites_an_existing_config_with_mode_0600(cvops: Invoke, config_file: Path) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{}")
    config_file.chmod(0o644)
    _login(cvops)
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_login_prompts_for_the_password_without_echoing_it(cvops: Invoke) -> None:
    result = cvops("login", "--username", "admin", input=f"{ADMIN_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert ADMIN_PASSWORD not in result.output


def test_whoami_uses_the_stored_token(cvops: Invoke, gateway: FakeGateway) -> None:
    _login(cvops)
    table = cvops("whoami")
    as_json = cvops("whoami", "--json")
    assert table.exit_code == 0 and "admin" in table.stdout
    assert msgspec.json.decode(as_json.stdout, type=UserView).role == "admin"
    assert gateway.requests[-1].headers["authorization"].startswith("Bearer session-admin")


def test_login_with_an_api_token_checks_it_before_storing_it(
    cvops: Invoke, gateway: FakeGateway, config_file: Path
) -> None:
    refused = cvops("login", "--token", "made-up")
    assert refused.exit_code == 1 and not config_file.exists()

    gateway.api_tokens.append(
        {"id": "t1", "token": "cvops_api_t1", "label": "ci", "owner": "admin", "revoked": False}
    )
    accepted = cvops("login", "--token", "cvops_api_t1")
    assert accepted.exit_code == 0, accepted.output
    assert msgspec.json.decode(config_file.read_bytes())["token"] == "cvops_api_t1"


def test_logout_revokes_the_session_and_forgets_the_token(
    cvops: Invoke, gateway: FakeGateway, config_file: Path
) -> None:
    _login(cvops)
    assert cvops("logout").exit_code == 0
    assert gateway.sessions == {}
    assert not config_file.exists()
    result = cvops("whoami")
    assert result.exit_code == 1
    assert "error: unauthorized: missing or invalid bearer token" in result.stderr
    assert "cvops login" in result.stderr


def test_logout_forgets_the_token_even_when_the_gateway_is_down(
    cvops: Invoke, gateway: FakeGateway, config_file: Path
) -> None:
    _login(cvops)
    gateway.outage = httpx.Response(503, json={"error": "unavailable", "detail": "draining"})
    result = cvops("logout")
    assert result.exit_code == 0 and "logged out" in result.stdout
    assert "did not revoke" in result.stderr
    assert not config_file.exists()


def test_a_stored_token_is_not_sent_to_another_gateway(cvops: Invoke, gateway: FakeGateway) -> None:
    _login(cvops)
    result = cvops("--url", "http://elsewhere.test", "whoami")
    assert result.exit_code == 1
    assert "authorization" not in gateway.requests[-1].headers


def test_wrong_password_exits_1_with_the_error_line(cvops: Invoke) -> None:
    result = cvops("login", "--username", "admin", "--password", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: invalid_credentials: wrong username or password"
    _no_traceback(result)


def test_users_add_and_list_as_table_and_json(cvops: Invoke) -> None:
    _login(cvops)
    added = cvops("users", "add", "alice", "--role", "engineer", "--password", "alice-pw-1")
    table = cvops("users", "list")
    as_json = cvops("users", "list", "--json")

    assert added.exit_code == 0 and "created user alice (engineer)" in added.stdout
    assert table.exit_code == 0
    assert "USERNAME" in table.stdout and "alice" in table.stdout and "engineer" in table.stdout
    users = msgspec.json.decode(as_json.stdout, type=list[UserView])
    assert [(u.username, u.role) for u in users] == [("admin", "admin"), ("alice", "engineer")]


def test_users_add_prompts_twice_for_the_password(cvops: Invoke, gateway: FakeGateway) -> None:
    _login(cvops)
    result = cvops("users", "add", "carol", "--role", "viewer", input="pw-carol-1\npw-carol-1\n")
    assert result.exit_code == 0, result.output
    assert gateway.users["carol"]["password"] == "pw-carol-1"


def test_forbidden_is_exit_1_with_code_and_detail(cvops: Invoke, gateway: FakeGateway) -> None:
    gateway.users["val"] = {"password": "val-pw-123", "role": "viewer", "disabled": False}
    _login(cvops, "val", "val-pw-123")
    result = cvops("users", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: forbidden: role viewer may not do this"
    assert result.stdout == ""
    _no_traceback(result)


def test_existing_user_is_a_conflict(cvops: Invoke) -> None:
    _login(cvops)
    cvops("users", "add", "dave", "--role", "viewer", "--password", "dave-pw-1")
    again = cvops("users", "add", "dave", "--role", "viewer", "--password", "dave-pw-1")
    assert again.exit_code == 1 and "error: conflict: user dave exists" in again.stderr


def test_users_set_changes_only_what_is_given(cvops: Invoke, gateway: FakeGateway) -> None:
    _login(cvops)
    cvops("users", "add", "erin", "--role", "viewer", "--password", "erin-pw-1")
    nothing = cvops("users", "set", "erin")
    changed = cvops("users", "set", "erin", "--role", "engineer", "--disable")
    assert nothing.exit_code == 2
    assert changed.exit_code == 0, changed.output
    assert "updated user erin (engineer, disabled)" in changed.stdout
    assert gateway.users["erin"]["password"] == "erin-pw-1"


def test_tokens_create_list_revoke(cvops: Invoke, gateway: FakeGateway) -> None:
    _login(cvops)
    created = cvops("tokens", "create", "--label", "ci")
    assert created.exit_code == 0 and "cvops_secret_tok1" in created.stdout
    assert "not shown again" in created.stderr
    assert "ci" in cvops("tokens", "list").stdout
    revoked = cvops("tokens", "revoke", "tok1")
    assert revoked.exit_code == 0 and gateway.api_tokens[0]["revoked"]
    assert "revoked" in cvops("tokens", "list").stdout


def _model_file(tmp_path: Path, name: str = "net.onnx", size: int = 200_000) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x08" * size)
    return path


def test_models_upload_prints_the_verdict_and_a_progress_bar(
    cvops: Invoke, gateway: FakeGateway, tmp_path: Path
) -> None:
    _login(cvops)
    path = _model_file(tmp_path)
    result = cvops(
        "models",
        "upload",
        str(path),
        "--name",
        "net",
        "--architecture",
        "resnet18",
        "--num-classes",
        "10",
        "--input-shape",
        "3,32,32",
    )
    assert result.exit_code == 0, result.output
    assert "model net version 1 validated" in result.stdout
    assert "correlation id: corr-1" in result.stdout
    assert "validating net.onnx" in result.stderr  # the finished progress bar
    assert gateway.uploads[-1].content == path.read_bytes()
    assert gateway.uploads[-1].fields["input_shape"] == "3,32,32"


@pytest.mark.parametrize("command", ["models", "datasets"])
def test_a_viewers_upload_is_refused_before_any_progress_bar(
    cvops: Invoke, gateway: FakeGateway, tmp_path: Path, command: str
) -> None:
    gateway.users["val"] = {"password": "val-pw-123", "role": "viewer", "disabled": False}
    _login(cvops, "val", "val-pw-123")
    result = cvops(command, "upload", str(_model_file(tmp_path, "big.zip")), "--name", "x")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: forbidden: role 'viewer' may not do this (needs 'write')"
    )
    assert "uploading" not in result.output and "validating" not in result.output
    assert not [r for r in gateway.requests if r.url.path == f"/{command}"]
    _no_traceback(result)


def test_models_upload_json_is_the_upload_result(cvops: Invoke, tmp_path: Path) -> None:
    _login(cvops)
    result = cvops("models", "upload", str(_model_file(tmp_path)), "--name", "n", "--json")
    parsed = msgspec.json.decode(result.stdout, type=UploadResult)
    assert parsed.status == "validated" and parsed.version == 1


def test_a_rejected_upload_exits_1_with_the_reason(cvops: Invoke, tmp_path: Path) -> None:
    _login(cvops)
    result = cvops("models", "upload", str(_model_file(tmp_path, "bad.pt", 100)), "--name", "x")
    assert result.exit_code == 1
    assert "rejected: not a safe model format: pickle" in result.stdout
    _no_traceback(result)


def test_a_pending_upload_says_how_to_follow_it(cvops: Invoke, tmp_path: Path) -> None:
    _login(cvops)
    result = cvops("datasets", "upload", str(_model_file(tmp_path, "slow.zip", 10)), "-n", "d")
    assert result.exit_code == 0
    assert "cvops events corr-1" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("models", "upload", "{path}"),  # --name missing
        ("models", "upload", "/no/such/file.onnx", "--name", "m"),
        ("models", "upload", "{path}", "--name", "m", "--input-shape", "3,x,32"),
        ("models", "stage", "m", "production"),  # no version
        ("models", "stage", "m:1", "live"),  # no such stage
        ("models", "show", "m:zero"),
        ("users", "add", "zed", "--role", "root", "--password", "p"),
        ("nonsense",),
    ],
)
def test_usage_errors_exit_2(cvops: Invoke, tmp_path: Path, args: tuple[str, ...]) -> None:
    path = str(_model_file(tmp_path, size=10))
    result = cvops(*(a.format(path=path) for a in args))
    assert result.exit_code == 2, result.output
    _no_traceback(result)


def test_models_list_show_and_stage(cvops: Invoke, tmp_path: Path) -> None:
    _login(cvops)
    path = str(_model_file(tmp_path, size=1000))
    for _ in range(2):
        cvops("models", "upload", path, "--name", "net", "--input-shape", "1,28,28")

    listed = cvops("models", "list")
    assert listed.exit_code == 0 and "net" in listed.stdout and "v2" in listed.stdout
    assert msgspec.json.decode(cvops("models", "list", "--json").stdout, type=list[ModelView])

    shown = cvops("models", "show", "net")
    assert shown.exit_code == 0
    assert "v1" in shown.stdout and "v2" in shown.stdout and "1,234,567" in shown.stdout
    model = msgspec.json.decode(cvops("models", "show", "net", "--json").stdout, type=ModelView)
    assert [v.version for v in model.versions] == [1, 2]

    staged = cvops("models", "stage", "net:2", "production")
    assert staged.exit_code == 0 and "net:2 is now production" in staged.stdout

    version = cvops("models", "show", "net:v2")
    assert version.exit_code == 0
    assert "production" in version.stdout and "float32[-1,1,28,28]" in version.stdout
    parsed = msgspec.json.decode(
        cvops("models", "show", "net:2", "--json").stdout, type=ModelVersionView
    )
    assert parsed.stage == "production"


def test_missing_model_is_exit_1_not_found(cvops: Invoke) -> None:
    _login(cvops)
    result = cvops("models", "show", "ghost:3")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: not_found: no version ghost:3"


def test_models_download_writes_the_file(
    cvops: Invoke, gateway: FakeGateway, tmp_path: Path
) -> None:
    _login(cvops)
    cvops("models", "upload", str(_model_file(tmp_path, size=10)), "--name", "net")
    out = tmp_path / "downloads"
    out.mkdir()
    result = cvops("models", "download", "net:1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "net-v1.onnx").read_bytes() == gateway.artifact


def test_datasets_upload_list_show(cvops: Invoke, tmp_path: Path) -> None:
    _login(cvops)
    path = str(_model_file(tmp_path, "shapes.zip", 5000))
    up = cvops("datasets", "upload", path, "--name", "shapes", "--seed", "4")
    assert up.exit_code == 0 and "dataset shapes version 1 validated" in up.stdout

    listed = cvops("datasets", "list")
    assert "shapes" in listed.stdout and "70/15/15" in listed.stdout
    shown = cvops("datasets", "show", "shapes")
    assert shown.exit_code == 0
    assert "circle" in shown.stdout and "square" in shown.stdout and "seed 4" in shown.stdout
    assert msgspec.json.decode(cvops("datasets", "show", "shapes", "--json").stdout)["seed"] == 4


def test_events_prints_one_line_per_event_and_stops_on_until(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    gateway.events["corr-9"] = sse(
        'id: 11\nevent: registry.model_upload_received.v1\ndata: {"model_name": "net", '
        '"actor": "admin", "occurred_at": "2026-01-02T03:04:05Z"}',
        'id: 12\nevent: registry.model_version_added.v1\ndata: {"model_name": "net", "version": 1}',
        'id: 13\nevent: registry.model_stage_changed.v1\ndata: {"model_name": "net"}',
    )
    _login(cvops)
    lines = cvops("events", "corr-9").stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == [
        "11",
        "2026-01-02",
        "03:04:05",
        "registry.model_upload_received.v1",
        "admin",
        "model_name=net",
    ]
    assert "version=1" in lines[1]

    assert "follow" not in gateway.requests[-1].url.params
    as_json = cvops(
        "events", "corr-9", "--json", "--no-follow", "--until", "*.model_version_added.*"
    )
    assert gateway.requests[-1].url.params["follow"] == "false"
    docs = [msgspec.json.decode(line) for line in as_json.stdout.splitlines()]
    assert [d["seq"] for d in docs] == [11, 12]
    assert docs[1]["data"] == {"model_name": "net", "version": 1}


def test_events_does_not_print_the_keep_alives_of_a_followed_feed(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    # the gateway's keep-alive is a comment with an empty data line: ": keep-alive\r\ndata: "
    keep_alive = ": keep-alive\r\ndata: \r"
    gateway.events["corr-7"] = sse(
        keep_alive,
        'id: 11\nevent: registry.model_version_added.v1\ndata: {"model_name": "net"}',
        keep_alive,
        "event: ping",  # an event without data
        'id: 12\nevent: registry.model_stage_changed.v1\ndata: {"model_name": "net"}',
        keep_alive,
    )
    _login(cvops)
    result = cvops("events", "corr-7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["11", "12"]
    assert "message" not in result.stdout and "ping" not in result.stdout
    as_json = cvops("events", "corr-7", "--json")
    assert [msgspec.json.decode(line)["seq"] for line in as_json.stdout.splitlines()] == [11, 12]


def test_health_table(cvops: Invoke) -> None:
    result = cvops("health")
    assert result.exit_code == 0 and "ok" in result.stdout


def test_an_error_page_that_is_not_json_still_prints_one_line(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    _login(cvops)
    gateway.outage = httpx.Response(502, content=b"<html>Bad Gateway</html>")
    result = cvops("models", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: http_502: <html>Bad Gateway</html>"


def test_a_body_of_the_wrong_shape_is_an_error_line_not_a_traceback(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    _login(cvops)
    gateway.outage = httpx.Response(200, json={"items": []})
    result = cvops("models", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: bad_response: GET /models:")
    _no_traceback(result)


def test_unreachable_gateway_exits_3_with_a_clear_message(config_file: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["--url", url, "models", "list"])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"error: cannot reach the gateway at {url} — is `./justw up` running?"
    )
    _no_traceback(result)


def test_a_corrupt_config_file_is_reported_and_login_replaces_it(
    cvops: Invoke, config_file: Path
) -> None:
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{not json")
    broken = cvops("whoami")
    assert broken.exit_code == 1 and "error: bad_config:" in broken.stderr
    _login(cvops)
    assert cvops("whoami").exit_code == 0


def test_the_installed_command_exits_3_when_the_gateway_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "CVOPS_CONFIG": str(tmp_path / "c.json"), "CVOPS_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "cvops.client", "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr == f"error: cannot reach the gateway at {url} — is `./justw up` running?\n"
