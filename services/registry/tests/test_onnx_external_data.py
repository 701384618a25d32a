"""ONNX external data: every tensor that can point at a file is checked, and none may.

An upload is one file, so any external reference names a file on the server; the checker
(and later loaders) resolve it against their working directory. The refusal must not depend
on whether that file exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cvops.registry.inspect_model import ModelHints, inspect_model
from cvops.registry.safety import Refused
from cvops.testing import registry as samples

LOCATIONS = (
    "present.txt",  # exists in the working directory
    "absent.txt",
    "../../README.md",
    "secrets/../present.txt",
    "/etc/passwd",
    "/etc/no-such-file",
    "C:\\Windows\\win.ini",
)


@pytest.fixture
def server_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ``present.txt``, like the service's own files."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    (workdir / "present.txt").write_bytes(b"admin:hunter2\n")
    monkeypatch.chdir(workdir)
    return workdir


def _refusal(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "upload.onnx"
    path.write_bytes(data)
    with pytest.raises(Refused) as err:
        inspect_model(path, ModelHints(), max_expanded_bytes=1 << 30)
    return str(err.value)


@pytest.mark.parametrize("carrier", samples.EXTERNAL_TENSOR_CARRIERS)
def test_a_tensor_pointing_at_an_existing_server_file_is_refused(
    server_dir: Path, carrier: str
) -> None:
    reason = _refusal(server_dir.parent, samples.onnx_with_external_tensor("present.txt", carrier))
    assert "external data" in reason
    assert "present.txt" not in reason


@pytest.mark.parametrize("carrier", ["constant", "if_branch", "loop_body", "initializer"])
def test_the_refusal_is_the_same_whether_or_not_the_file_exists(
    server_dir: Path, carrier: str
) -> None:
    reasons = {
        loc: _refusal(server_dir.parent, samples.onnx_with_external_tensor(loc, carrier))
        for loc in LOCATIONS
    }
    assert len(set(reasons.values())) == 1, reasons


def test_the_refusal_says_where_the_tensor_is(server_dir: Path) -> None:
    reason = _refusal(server_dir.parent, samples.onnx_with_external_tensor("x", "if_branch"))
    assert "then_branch" in reason and "external data" in reason


def test_every_carrier_is_a_model_the_checker_alone_accepts(server_dir: Path) -> None:
    """The samples are well formed: without the external-data check they would be stored."""
    import onnx

    for carrier in samples.EXTERNAL_TENSOR_CARRIERS:
        model = onnx.load_from_string(samples.onnx_with_external_tensor("present.txt", carrier))
        onnx.checker.check_model(model)
