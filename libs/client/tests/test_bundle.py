"""The checks of a downloaded model bundle: every file against its SHA256SUMS."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from cvops.client.bundle import BundleCorrupt, verify_bundle


def bundle(path: Path, files: dict[str, bytes], sums: dict[str, bytes] | None = None) -> Path:
    """A tar.gz under ``dep/`` with ``files`` and a SHA256SUMS of ``sums`` (default: files)."""
    listed = files if sums is None else sums
    text = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(listed.items()))
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**files, "SHA256SUMS": text.encode()}.items():
            info = tarfile.TarInfo(f"dep/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


FILES = {"Dockerfile": b"FROM x\n", "model_repository/dep/1/model.onnx": b"weights"}


def test_a_bundle_whose_files_match_its_sums_verifies(tmp_path: Path) -> None:
    assert verify_bundle(bundle(tmp_path / "ok.tar.gz", FILES)) == sorted(FILES)


@pytest.mark.parametrize(
    ("files", "sums", "why"),
    [
        ({**FILES, "Dockerfile": b"FROM evil\n"}, FILES, "digest mismatch: Dockerfile"),
        ({**FILES, "extra.sh": b"rm -rf /"}, FILES, "differ on extra.sh"),
        (FILES, {**FILES, "README.md": b"gone"}, "differ on README.md"),
    ],
)
def test_a_tampered_bundle_is_refused_naming_the_file(
    tmp_path: Path, files: dict[str, bytes], sums: dict[str, bytes], why: str
) -> None:
    with pytest.raises(BundleCorrupt, match=why):
        verify_bundle(bundle(tmp_path / "bad.tar.gz", files, sums))
