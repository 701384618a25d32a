"""The SDK's writes are exactly-once: each carries a fresh ``Idempotency-Key`` and is sent
again with the same key after a 503 or a lost connection, a bounded number of times.

A real gateway on a NATS of its own (an empty log: it bootstraps an admin) behind a
transport that loses answers, and a stand-in that answers 503.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import msgspec
import pytest

pytest.importorskip("cvops.gateway")

from cvops.client import Client, CvopsError
from cvops.contracts.api import CreateJob, JobCreated
from cvops.core import load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.testing.gateway import PASSWORD, RunningGateway

KEY = "idempotency-key"


@dataclass
class Sent:
    method: str
    path: str
    key: str | None


@dataclass
class LosingTransport(httpx.BaseTransport):
    """The network to a real gateway that loses the answers of the next ``lose`` writes
    (after the gateway handled them), and records what was sent."""

    inner: httpx.BaseTransport = field(default_factory=httpx.HTTPTransport)
    lose: int = 0
    sent: list[Sent] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(Sent(request.method, request.url.path, request.headers.get(KEY)))
        response = self.inner.handle_request(request)
        if request.method != "GET" and self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset before the answer arrived")
        return response


@pytest.fixture(scope="module")
def admin_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(url, admin token) of a gateway that bootstrapped its admin on an empty log."""
    root = tmp_path_factory.mktemp("sdk-retries")
    proc, port = start_nats(root / "nats", port=-1, log_file=root / "nats.log")
    gateway = None
    try:
        settings = load_settings({}, nats_url=f"nats://127.0.0.1:{port}", home=str(root / "home"))
        gateway = RunningGateway(settings).start()
        lines = (root / "home" / "admin.credentials").read_text().splitlines()
        credentials = dict(line.split("=", 1) for line in lines if line)
        yield gateway.url, credentials["token"]
    finally:
        if gateway is not None:
            gateway.stop()
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def test_a_write_whose_answer_was_lost_is_sent_again_with_its_key_and_happens_once(
    admin_gateway: tuple[str, str],
) -> None:
    url, token = admin_gateway
    transport = LosingTransport(lose=1)
    username = f"u-{uuid.uuid4().hex[:8]}"
    with Client(url, token, transport=transport, retry_pause_s=0.01) as client:
        created = client.create_user(username, PASSWORD, "viewer")
        assert created.username == username and created.role == "viewer"
        assert [u.username for u in client.list_users()].count(username) == 1

    writes = [s for s in transport.sent if s.method == "POST"]
    assert [(s.path, s.key == writes[0].key) for s in writes] == [("/users", True)] * 2
    assert writes[0].key


def test_a_token_request_retried_after_a_lost_answer_issues_no_second_token(
    admin_gateway: tuple[str, str],
) -> None:
    url, token = admin_gateway
    transport = LosingTransport(lose=1)
    label = f"ci-{uuid.uuid4().hex[:8]}"
    with Client(url, token, transport=transport, retry_pause_s=0.01) as client:
        with pytest.raises(CvopsError) as caught:
            client.create_token(label)
        issued = [t for t in client.list_tokens() if t.label == label]
    assert caught.value.status == 409
    assert len(issued) == 1 and issued[0].token_id in str(caught.value.detail)


class Flaky:
    """A stand-in gateway answering ``POST /jobs`` with 503 ``failures`` times, then 201."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            return httpx.Response(200, json=[])
        if self.failures > 0:
            self.failures -= 1
            body = {"error": "unavailable", "detail": "nothing was written; retry shortly"}
            return httpx.Response(503, json=body, headers={"Retry-After": "0"})
        created = JobCreated(job_id="job-1", kind="training", correlation_id="c")
        return httpx.Response(201, content=msgspec.json.encode(created))


def test_a_write_answered_503_is_sent_again_with_the_same_key() -> None:
    flaky = Flaky(failures=2)
    body = msgspec.convert({"dataset": "d", "arch": "simple-cnn"}, type=CreateJob)
    with Client("http://gw.test", "t", transport=httpx.MockTransport(flaky.handle)) as client:
        assert client.create_job(body).job_id == "job-1"
        first_keys = {r.headers.get(KEY) for r in flaky.requests}
        client.create_job(body)
        client.list_jobs()
    assert len(first_keys) == 1 and None not in first_keys
    posts = [r for r in flaky.requests if r.method == "POST"]
    assert len(posts) == 4  # 503, 503, 201; then the next write, at once
    assert posts[3].headers[KEY] not in first_keys  # a new write, a new key
    assert KEY not in flaky.requests[-1].headers  # reads carry none


def test_retries_of_a_write_are_bounded() -> None:
    flaky = Flaky(failures=100)
    body = msgspec.convert({"dataset": "d", "arch": "simple-cnn"}, type=CreateJob)
    transport = httpx.MockTransport(flaky.handle)
    client = Client("http://gw.test", "t", transport=transport, write_attempts=3)
    with client, pytest.raises(CvopsError) as caught:
        client.create_job(body)
    assert caught.value.status == 503
    assert len(flaky.requests) == 3
