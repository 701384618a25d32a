"""The inspector child process: results come back; crashes and hangs become refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cvops.registry.inspect_model import ModelHints, inspect_model
from cvops.registry.inspector import InspectorProcess
from cvops.registry.safety import Refused
from cvops.testing import registry as samples


@pytest.fixture
def inspector() -> Iterator[InspectorProcess]:
    proc = InspectorProcess(timeout_s=20)
    try:
        yield proc
    finally:
        proc.close()


def test_results_and_refusals_cross_the_process_boundary(
    inspector: InspectorProcess, tmp_path: Path
) -> None:
    good, evil = tmp_path / "m.onnx", tmp_path / "p.pkl"
    good.write_bytes(samples.onnx_model())
    evil.write_bytes(samples.malicious_pickle(tmp_path / "pwned"))
    facts = inspector.call(inspect_model, good, ModelHints(), max_expanded_bytes=1 << 20)
    assert facts.format == "onnx" and facts.parameter_count == 15
    with pytest.raises(Refused, match="pickle"):
        inspector.call(inspect_model, evil, ModelHints(), max_expanded_bytes=1 << 20)
    assert not (tmp_path / "pwned").exists()


def test_a_crash_in_the_parser_is_a_refusal_and_the_next_call_works(
    inspector: InspectorProcess, tmp_path: Path
) -> None:
    with pytest.raises(Refused, match="crashed the inspector"):
        inspector.call(samples.crash_like_a_parser)
    good = tmp_path / "m.onnx"
    good.write_bytes(samples.onnx_model())
    assert inspector.call(inspect_model, good, ModelHints(), max_expanded_bytes=1 << 20).opset == 17


def test_a_hang_is_cut_off_at_the_timeout() -> None:
    inspector = InspectorProcess(timeout_s=1.0)
    try:
        with pytest.raises(Refused, match="longer than"):
            inspector.call(samples.hang, 30)
    finally:
        inspector.close()
