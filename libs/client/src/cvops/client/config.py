"""Where the CLI keeps the gateway URL and token: a JSON file only its owner can read.

``$CVOPS_CONFIG`` names the file; otherwise ``$XDG_CONFIG_HOME/cvops/config.json``
(``~/.config/cvops/config.json``). It is written atomically with mode 0600.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import msgspec


class ClientConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ``cvops login`` remembers."""

    url: str | None = None
    token: str | None = None
    username: str | None = None
    expires_at: datetime | None = None  # None for API tokens, which do not expire


class ConfigError(Exception):
    """The config file exists but cannot be read as a cvops config."""


def config_path() -> Path:
    """The config file this process uses."""
    explicit = os.environ.get("CVOPS_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "cvops" / "config.json"


def load_config(path: Path | None = None) -> ClientConfig:
    """The stored config, or an empty one when there is no file."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ClientConfig()
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from err
    try:
        return msgspec.json.decode(raw, type=ClientConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ConfigError(f"{path}: {err} (delete it and run `cvops login`)") from err


def save_config(config: ClientConfig, path: Path | None = None) -> Path:
    """Write the config atomically, readable and writable by its owner only."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is ignored when the file existed
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def clear_config(path: Path | None = None) -> bool:
    """Forget the stored token; True when there was one."""
    path = path or config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
