"""Checks of a downloaded model bundle (``cvops package``): its digest, and every file in it
against the ``SHA256SUMS`` it carries."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

SUMS = "SHA256SUMS"


class BundleCorrupt(ValueError):
    """A bundle whose bytes or files do not match their digests."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def verify_bundle(path: Path) -> list[str]:
    """Check every file of a bundle against its ``SHA256SUMS``; return the files checked.

    Raises:
        BundleCorrupt: a file missing from the sums, one that differs, or no sums at all.
    """
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        sums = [m for m in members if Path(m.name).name == SUMS and m.name.count("/") == 1]
        if len(sums) != 1:
            raise BundleCorrupt(f"{path.name} holds no {SUMS} at its top")
        top = sums[0].name.split("/")[0]
        listed = _read_sums(tar, sums[0])
        found: dict[str, str] = {}
        for m in members:
            if m is sums[0]:
                continue
            if not m.name.startswith(f"{top}/"):
                raise BundleCorrupt(f"{m.name} lies outside the bundle's folder {top}/")
            fh = tar.extractfile(m)
            assert fh is not None  # a regular file
            h = hashlib.sha256()
            while chunk := fh.read(1024 * 1024):
                h.update(chunk)
            found[m.name.removeprefix(f"{top}/")] = h.hexdigest()
    if set(found) != set(listed):
        odd = sorted(set(found) ^ set(listed))
        raise BundleCorrupt(f"{SUMS} and the files differ on {', '.join(odd)}")
    bad = sorted(name for name, digest in found.items() if listed[name] != digest)
    if bad:
        raise BundleCorrupt(f"digest mismatch: {', '.join(bad)}")
    return sorted(found)


def _read_sums(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, str]:
    fh = tar.extractfile(member)
    assert fh is not None
    listed: dict[str, str] = {}
    for line in fh.read().decode().splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleCorrupt(f"unreadable {SUMS} line {line!r}")
        listed[name] = digest
    return listed
