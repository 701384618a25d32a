"""Inspections run in a child process, so hostile bytes cannot take the registry down.

ONNX, TorchScript and image decoders are C/C++ parsers: a file that crashes or hangs one of
them must end as a rejection, not as a registry that dies on every redelivery. The child is
started once (spawn, so it inherits no sockets or event loop), reused while it lives, killed
on timeout, and exits by itself when the registry dies (its pipe closes).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from cvops.registry.safety import Refused

DEFAULT_TIMEOUT_S = 1800.0
_STOPPED_FROM_OUTSIDE = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class InspectorStopped(OSError):
    """The child was stopped from outside (shutdown): the host's problem, so the job is retried."""


class InspectorProcess:
    """Calls a picklable, top-level function in the child; one call at a time."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the child (blocking; call it from a thread). Raises Refused."""
        with self._lock:
            conn = self._ensure()
            conn.send((fn, args, kwargs))
            if not conn.poll(self.timeout_s):
                self._kill()
                raise Refused(f"inspection took longer than {self.timeout_s:.0f} s; refused")
            try:
                outcome, value = conn.recv()
            except (EOFError, OSError) as err:
                code = self._proc.exitcode if self._proc is not None else None
                self._kill()
                if code is not None and -code in _STOPPED_FROM_OUTSIDE:
                    # a shutdown signal, not the file: retry the upload later, do not judge it
                    raise InspectorStopped(f"the inspector was stopped (signal {-code})") from err
                raise Refused(
                    f"the file crashed the inspector (exit {code}); it is not a valid upload"
                ) from err
        if outcome == "ok":
            return value
        if outcome == "refused":
            raise Refused(value)
        raise RuntimeError(value)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _ensure(self) -> Connection:
        if self._proc is None or not self._proc.is_alive() or self._conn is None:
            self._kill()
            parent, child = self._ctx.Pipe()
            self._proc = self._ctx.Process(
                target=_serve, args=(child,), name="cvops-registry-inspector", daemon=True
            )
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def _kill(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
            self._proc = None


def _serve(conn: Connection) -> None:
    """The child's loop: run each call, send back ("ok"|"refused"|"error", value)."""
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except (EOFError, OSError):  # the registry is gone
            return
        try:
            reply: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except Refused as err:
            reply = ("refused", str(err))
        except MemoryError:
            reply = ("refused", "the file needs more memory to inspect than this host allows")
        except Exception as err:  # a parser tripping on hostile bytes, reported as a reason
            reply = ("error", f"{type(err).__name__}: {err}")
        conn.send(reply)
