"""Who may do what on NATS: each service connects as its own user, allowed to append only
its own contexts' events and to read only the streams it needs; an integrator may subscribe
to ``cvops.evt.>`` and nothing else. No user may delete or change a stream.

The launcher writes these users into the embedded server's config (``authorization_block``)
with passwords it keeps in ``<home>/nats/users.json`` (mode 0600) and hands each service
its own; the compose and cluster configs carry the same block with passwords from the
environment (``deploy/nats/``, written by ``python -m cvops.core.nats_auth``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cvops.core.bus import ARTIFACT_BUCKET, IDENTITY_STREAM, LEASE_BUCKET, PRESENCE_BUCKET, STREAM

INTEGRATOR = "integrator"
OBJECT_STREAM = f"OBJ_{ARTIFACT_BUCKET}"
KV_STREAM = f"KV_{LEASE_BUCKET}"
# each instance's status (``cvops.core.presence``): every service writes keys under its own
# name only; the gateway reads them all (``GET /system``)
PRESENCE_STREAM = f"KV_{PRESENCE_BUCKET}"


@dataclass(frozen=True)
class Access:
    """What one service's user may append and read."""

    appends: tuple[str, ...]  # subjects (filters) of the events it publishes
    reads_identity: bool = False  # CVOPS_IDENTITY: password and token hashes
    reads_presence: bool = False  # every instance's status (the gateway's GET /system)


def _contexts(*names: str) -> tuple[str, ...]:
    return tuple(f"cvops.sec.{n}.>" if n == "identity" else f"cvops.evt.{n}.>" for n in names)


# service -> its access; a service that is not here cannot connect
SERVICES: dict[str, Access] = {
    # the gateway turns users' requests into events of every context, and holds identity
    "gateway": Access(
        _contexts("identity", "registry", "training", "conversion", "benchmark", "deployment"),
        reads_identity=True,
        reads_presence=True,
    ),
    "registry": Access(_contexts("registry")),
    # a trained model is registered as an upload, like a user's
    "trainer": Access(
        (*_contexts("training", "trial"), "cvops.evt.registry.*.model_upload_received")
    ),
    "converter": Access(_contexts("conversion")),
    "benchmarker": Access(_contexts("benchmark")),
    # inference needs the users' token digests (never their password hashes)
    "inference-router": Access(_contexts("deployment"), reads_identity=True),
    "reporter": Access(_contexts("report")),
}


def _read(stream: str) -> list[str]:
    """The JetStream API subjects that read ``stream``: consumers, their messages, acks."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",  # flow-control replies of an ordered consumer (object reads)
    ]


def permissions(service: str) -> dict[str, dict[str, list[str]]]:
    """The NATS ``permissions`` of a service's user."""
    access = SERVICES[service]
    streams = [STREAM, IDENTITY_STREAM, OBJECT_STREAM, KV_STREAM, PRESENCE_STREAM]
    readable = [STREAM, OBJECT_STREAM, KV_STREAM]
    if access.reads_identity:
        readable.append(IDENTITY_STREAM)
    if access.reads_presence:
        readable.append(PRESENCE_STREAM)
    publish = [
        *access.appends,
        "$JS.API.INFO",
        # the client looks a stream up by subject (an object store read): names only
        "$JS.API.STREAM.NAMES",
        # every service ensures the streams exist (create is a no-op when they do)
        *(f"$JS.API.STREAM.INFO.{s}" for s in streams),
        *(f"$JS.API.STREAM.CREATE.{s}" for s in streams),
        *(subject for s in readable for subject in _read(s)),
        # artifacts and leases: their buckets' own subjects (objects are deleted by purge)
        f"$O.{ARTIFACT_BUCKET}.>",
        f"$KV.{LEASE_BUCKET}.>",
        f"$KV.{PRESENCE_BUCKET}.{service}.>",
        f"$JS.API.STREAM.PURGE.{OBJECT_STREAM}",
        f"$JS.API.STREAM.PURGE.{KV_STREAM}",
    ]
    return {"publish": {"allow": publish}, "subscribe": {"allow": ["_INBOX.>"]}}


INTEGRATOR_PERMISSIONS = {
    "publish": {"deny": [">"]},
    "subscribe": {"allow": ["cvops.evt.>"]},
}


def users() -> list[str]:
    """Every NATS user: the services and the integrator."""
    return [*SERVICES, INTEGRATOR]


def authorization_block(passwords: Mapping[str, str]) -> str:
    """The ``authorization`` block of a server config; a password value is written as is, so
    ``$CVOPS_NATS_PASSWORD_GATEWAY`` (unquoted) makes the server read the environment."""
    lines = ["authorization {", "  users = ["]
    for user in users():
        perms = INTEGRATOR_PERMISSIONS if user == INTEGRATOR else permissions(user)
        password = passwords[user]
        quoted = password if password.startswith("$") else json.dumps(password)
        lines.append(f"    {{user: {json.dumps(user)}, password: {quoted},")
        lines.append(f"     permissions: {json.dumps(perms)}}}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def env_password_name(user: str) -> str:
    """The environment variable that holds ``user``'s password in the deployment configs."""
    return "CVOPS_NATS_PASSWORD_" + user.upper().replace("-", "_")


def users_file(home: Path) -> Path:
    return home / "nats" / "users.json"


def load_or_create_passwords(home: Path) -> dict[str, str]:
    """Each user's password, made once per home and kept in ``users.json`` (mode 0600)."""
    path = users_file(home)
    known: dict[str, str] = {}
    if path.exists():
        known = json.loads(path.read_text())
    missing = [u for u in users() if u not in known]
    if missing:
        known.update({u: secrets.token_urlsafe(24) for u in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f, indent=1)
        os.replace(tmp, path)
    return known


def credentials(home: Path, user: str) -> tuple[str, str] | None:
    """``user``'s name and password from ``home``'s users file (None when there is none)."""
    path = users_file(home)
    if not path.exists():
        return None
    password = json.loads(path.read_text()).get(user)
    return None if password is None else (user, password)


def deployment_block() -> str:
    """The block the compose and cluster configs carry: passwords from the environment."""
    return authorization_block({u: f"${env_password_name(u)}" for u in users()})


def env_lines() -> str:
    """A random password for every user, as ``CVOPS_NATS_PASSWORD_<USER>=...`` lines."""
    return "".join(f"{env_password_name(u)}={secrets.token_urlsafe(24)}\n" for u in users())


if __name__ == "__main__":
    # the deployment configs' block (deploy/nats/*.conf); --env: a fresh .env for compose
    sys.stdout.write(env_lines() if "--env" in sys.argv[1:] else deployment_block())
