"""The TUI's parts without a terminal: router latency from Prometheus text, character charts,
and live feeds that a closing view cuts while their thread waits in a socket read."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cvops.client.sdk import Client
from cvops.client.tui.charts import Bar, Point, bars, scatter
from cvops.client.tui.feeds import CuttableTransport, FeedCut
from cvops.client.tui.latency import latency, parse_metrics, quantile


def _metrics(counts: dict[str, int], ok: int, failed: int, grpc_ok: int = 0) -> str:
    lines = [
        f'cvops_router_request_duration_seconds_bucket{{model="net",version="1",'
        f'protocol="http",le="{le}"}} {n}'
        for le, n in counts.items()
    ]
    lines += [
        'cvops_router_request_duration_seconds_bucket{model="other",version="1",'
        'protocol="http",le="+Inf"} 7',
        *(
            f'cvops_router_requests_total{{model="net",version="{v}",protocol="{p}",'
            f'code="{code}"}} {n}'
            for v, p, code, n in (
                (1, "http", "200", ok),
                (1, "http", "500", failed),
                (2, "grpc", "OK", grpc_ok),
            )
        ),
        "# HELP cvops_router_retries_total Requests retried",
        'cvops_router_retries_total{model="net"} 3',
    ]
    return "\n".join(lines)


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    buckets = {0.001: 0.0, 0.002: 50.0, 0.005: 90.0, 0.01: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.002)
    assert quantile(0.95, buckets) == pytest.approx(0.0075)
    assert quantile(0.25, buckets) == pytest.approx(0.0015)
    beyond = {0.01: 10.0, math.inf: 100.0}  # most requests slower than the last finite edge
    assert quantile(0.95, beyond) == 0.01
    assert quantile(0.5, {0.01: 0.0, math.inf: 0.0}) is None


def test_latency_of_a_window_counts_only_the_requests_between_two_scrapes() -> None:
    first = parse_metrics(_metrics({"0.001": 10, "0.01": 10, "+Inf": 10}, 10, 0), at=100.0)
    second = parse_metrics(
        _metrics({"0.001": 10, "0.01": 60, "+Inf": 110}, 105, 5, grpc_ok=5), at=110.0
    )

    since_start = latency("net", first)
    assert since_start is not None and since_start.window_s is None
    assert since_start.requests == 10 and since_start.per_second is None
    assert since_start.p95_ms == pytest.approx(0.95)

    window = latency("net", second, first)
    assert window is not None and window.window_s == 10.0
    assert window.requests == 105 and window.per_second == pytest.approx(10.5)
    assert window.error_share == pytest.approx(5 / 105)  # HTTP 500s; gRPC OK is no error
    assert window.p50_ms == pytest.approx(1 + 9 * 50 / 50)  # the window's 100 observations
    assert window.p95_ms == pytest.approx(10.0)  # beyond the last finite bucket
    assert latency("never-served", second, first) is None


def test_scatter_puts_the_best_point_top_right_and_draws_the_front_over_the_rest() -> None:
    chart = scatter(
        [Point(1.0, 0.5), Point(3.0, 0.9, True), Point(2.0, 0.7)],
        x_label="latency",
        y_label="accuracy",
        legend=("front", "others"),
        width=21,
        height=5,
    ).plain.splitlines()
    grid = [line.split("│", 1)[1] for line in chart[1:6]]
    assert grid[0].rstrip().endswith("●") and len(grid[0].rstrip()) == 21
    assert grid[4].startswith("·")
    assert grid[2][10] == "·"
    assert chart[0] == "accuracy" and "● front  · others" in chart[-1]
    assert scatter([], x_label="x", y_label="y").plain == "no points yet"


def test_bars_scale_to_the_largest_value() -> None:
    lines = bars(
        [Bar("a", 2.0), Bar("bbb", 4.0, True), Bar("c", 0.0)], title="p95", width=10
    ).plain.splitlines()
    assert lines == ["p95", "a   █████ 2", "bbb ██████████ 4", "c    0"]


# -- cutting a feed --------------------------------------------------------------------------


@pytest.fixture
def quiet_feed() -> Iterator[str]:
    """A server that answers an event feed with one event, then says nothing more."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            conn.recv(65536)
            event = b'id: 1\nevent: training.started.v1\ndata: {"job_id": "j"}\n\n'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                + f"{len(event):x}\r\n".encode()
                + event
                + b"\r\n"
            )

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in connections:
            conn.close()


def test_cut_ends_a_feed_that_waits_in_a_socket_read_at_once(quiet_feed: str) -> None:
    transport = CuttableTransport()
    client = Client(quiet_feed, "token", transport=transport)
    seen: list[str] = []
    ended: list[BaseException] = []

    def follow() -> None:
        try:
            for _seq, event_type, _data in client.follow("j", lambda _t, _d: False):
                seen.append(event_type)
        except BaseException as err:  # what ended the feed is the test's subject
            ended.append(err)

    reader = threading.Thread(target=follow)
    reader.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["training.started.v1"]
    time.sleep(0.1)
    assert reader.is_alive()  # waiting for the next event

    cut_at = time.monotonic()
    transport.cut()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - cut_at < 0.5
    assert len(ended) == 1 and isinstance(ended[0], FeedCut)
    client.close()
