"""Refusal and the checks shared by model and data-set inspection: pickles and zip archives.

Nothing here executes user bytes: pickles are read opcode by opcode with ``pickletools``
(which never builds objects), zip members are judged by their headers before any is read.
"""

from __future__ import annotations

import pickletools
import re
import stat
import zipfile
from dataclasses import dataclass

PICKLE_PROTOCOL_MARK = 0x80  # PROTO opcode, first byte of every protocol >= 2 pickle
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_FROM_BYTES = 1024 * 1024  # tiny archives cannot be bombs; their ratio says nothing
MAX_ZIP_MEMBERS = 1_000_000


class Refused(Exception):
    """User bytes that the registry will not accept; the message is the reason users see."""


@dataclass(frozen=True)
class ZipSummary:
    members: list[zipfile.ZipInfo]  # files only, in archive order
    expanded_bytes: int


def looks_like_pickle(head: bytes) -> bool:
    """A raw Python pickle: PROTO 2..5 up front, or a protocol-0/1 GLOBAL (``c<module>\\n``)."""
    if len(head) >= 2 and head[0] == PICKLE_PROTOCOL_MARK and 1 <= head[1] <= 5:
        return True
    if head[:1] == b"c":
        line = head[1:].split(b"\n", 1)[0]
        return 0 < len(line) < 200 and all(chr(b).isalnum() or chr(b) in "._" for b in line)
    return False


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
               "BINSTRING", "SHORT_BINSTRING"}  # fmt: skip
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_EXT_OPS = {"EXT1", "EXT2", "EXT4"}


def pickle_globals(data: bytes) -> set[str]:
    """Every ``module.name`` a pickle would import, found without unpickling it.

    A STACK_GLOBAL whose operands are not two literal strings is reported as
    ``<computed>`` (a legitimate writer never builds them).
    """
    found: set[str] = set()
    pushed: list[str | None] = []  # what each pushing opcode left on top (None: not a string)
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in _STRING_OPS:
                pushed.append(arg if isinstance(arg, str) else None)
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in _PUT_OPS:
                memo[_memo_index(arg)] = pushed[-1] if pushed else None
            elif name in _GET_OPS:
                pushed.append(memo.get(_memo_index(arg)))
            elif name in ("GLOBAL", "INST"):
                found.add(str(arg).replace(" ", "."))
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                module, qualname = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if isinstance(module, str) and isinstance(qualname, str):
                    found.add(f"{module}.{qualname}")
                else:
                    found.add("<computed>")
                pushed.append(None)
            elif name in _EXT_OPS:
                found.add("<extension registry>")
            elif name in ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK"):
                continue
            else:
                pushed.append(None)
    except Exception as err:  # malformed opcode stream: refuse rather than guess
        raise Refused(f"embedded pickle is malformed ({err})") from err
    return found


def _memo_index(arg: object) -> int:
    return arg if isinstance(arg, int) else -1


def check_pickle_globals(data: bytes, what: str, allowed: re.Pattern[str]) -> None:
    """Refuse an embedded pickle that imports anything ``allowed`` does not fully match."""
    bad = sorted(g for g in pickle_globals(data) if not allowed.fullmatch(g))
    if bad:
        shown = ", ".join(bad[:5])
        raise Refused(
            f"{what} is a pickle that would import {shown}; pickles that can run code are refused"
        )


def is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def unsafe_member_name(name: str) -> bool:
    """Zip-slip: absolute paths, drive letters, or ``..`` components (either slash)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


def check_zip(zf: zipfile.ZipFile, *, max_expanded_bytes: int, what: str) -> ZipSummary:
    """Refuse zip-slip names, symlinks, and archives whose expanded size or ratio is absurd."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise Refused(f"{what} has {len(infos)} entries (at most {MAX_ZIP_MEMBERS})")
    files: list[zipfile.ZipInfo] = []
    expanded = 0
    compressed = 0
    for info in infos:
        if unsafe_member_name(info.filename):
            raise Refused(f"{what} has an unsafe path {info.filename!r} (absolute or '..')")
        if is_symlink(info):
            raise Refused(f"{what} contains a symbolic link {info.filename!r}")
        if info.is_dir():
            continue
        files.append(info)
        expanded += info.file_size
        compressed += info.compress_size
    if expanded > max_expanded_bytes:
        raise Refused(
            f"{what} expands to {expanded} bytes, more than the limit of {max_expanded_bytes}"
        )
    if expanded > RATIO_CHECK_FROM_BYTES and expanded > MAX_COMPRESSION_RATIO * max(compressed, 1):
        ratio = expanded / max(compressed, 1)
        raise Refused(
            f"{what} has a compression ratio of {ratio:.0f}x (more than "
            f"{MAX_COMPRESSION_RATIO}x looks like a zip bomb)"
        )
    return ZipSummary(members=files, expanded_bytes=expanded)


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Read one member, never more than its declared size (a lying header is refused)."""
    with zf.open(info) as fh:
        data = fh.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise Refused(f"archive member {info.filename!r} is not the size its header declares")
    return data
