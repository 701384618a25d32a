"""The embedded NATS's optional Go profiler (``nats_prof_port``): how NATS's own memory is
looked into (docs/reliability.md, "Load")."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from cvops.core.natsd import start_nats, stop_process, write_config
from cvops.core.settings import Settings
from cvops.testing.gateway_process import free_port


def test_the_profiler_is_off_unless_a_port_is_given(tmp_path: Path) -> None:
    assert Settings().nats_prof_port == 0
    conf = write_config(tmp_path / "off", port=-1, monitor_port=None).read_text()
    assert "prof_port" not in conf


def test_a_profiler_port_serves_nats_heap_profile(tmp_path: Path) -> None:
    port = free_port()
    proc, _client_port = start_nats(tmp_path / "nats", prof_port=port)
    try:
        url = f"http://127.0.0.1:{port}/debug/pprof/heap?debug=1"
        with urllib.request.urlopen(url, timeout=10) as resp:
            profile = resp.read().decode()
    finally:
        stop_process(proc)
    # the Go runtime's MemStats close the text profile
    assert "# HeapAlloc = " in profile and "# NextGC = " in profile
