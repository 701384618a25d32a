"""Supervise the real ``tritonserver`` that the nvidia-pytriton wheel ships.

The server runs in explicit model-control mode on the router's model repository, bound
to 127.0.0.1, with a backend directory of our own (the wheel's ``backends/python`` lacks
the stub) and a unique python-backend shared-memory prefix per start. When it dies the
supervisor cleans up (its stubs, its shared memory), starts it again and calls back so
the deployed models are loaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from cvops.core import get_logger

log = get_logger(__name__)

RestartHook = Callable[[], Awaitable[None]]
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """In the child: SIGTERM when the router dies, even by SIGKILL (no orphaned Triton)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become live; carries the tail of its log."""


def pytriton_root() -> Path:
    """The ``pytriton/tritonserver`` directory of the installed nvidia-pytriton wheel."""
    import pytriton  # imported late: only the supervisor needs the wheel

    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> Path:
    return pytriton_root() / "bin" / "tritonserver"


def python_backend_dir(target: Path) -> Path:
    """Make ``<target>/python`` with links to the python backend, its utils and its stub.

    Returns the ``--backend-directory`` to pass (``target``).
    """
    root = pytriton_root()
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    links = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root
        / "backends"
        / "python"
        / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root
        / "python_backend_stubs"
        / pyver
        / "triton_python_backend_stub",
    }
    backend = target / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for name, source in links.items():
        if not source.exists():
            raise TritonStartError(f"nvidia-pytriton lacks {source}")
        link = backend / name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return target


def server_environment() -> dict[str, str]:
    """The stub finds ``python3`` on PATH and needs this interpreter's libpython."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = f"{libdir}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
    env.pop("PYTHONPATH", None)
    return env


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalTriton:
    """One supervised tritonserver process: start, watch, restart, stop."""

    def __init__(
        self,
        *,
        repository: Path,
        workdir: Path,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        exit_timeout_s: int = 3,
        start_timeout_s: float = 60.0,
        pid_file: Path | None = None,
    ) -> None:
        self.repository = repository
        self.workdir = workdir
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.exit_timeout_s = exit_timeout_s
        self.start_timeout_s = start_timeout_s
        self.log_path = workdir / "tritonserver.log"
        self.pid_file = pid_file  # where `./justw status` finds the server
        self.process: asyncio.subprocess.Process | None = None
        self.generation = 0
        self.restarts = 0
        self._stopping = False
        self._on_down: list[Callable[[], None]] = []
        self._on_up: list[RestartHook] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    def on_down(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (synchronously) the moment the process is seen dead."""
        self._on_down.append(hook)

    def on_restarted(self, hook: RestartHook) -> None:
        """Await ``hook`` after a restart, once the server is live again."""
        self._on_up.append(hook)

    def _shm_prefix(self) -> str:
        return f"cvops{os.getpid()}g{self.generation}_"

    def command(self) -> list[str]:
        backends = python_backend_dir(self.workdir / "backends")
        return [
            str(tritonserver_binary()),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix()}",
            "--backend-config=python,shm-default-byte-size=8388608",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-verbose=0",
        ]

    async def start(self) -> None:
        """Start the server and return once it answers ``/v2/health/live``."""
        self._stopping = False
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="triton-supervisor")

    async def _spawn(self) -> None:
        self.generation += 1
        self.repository.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        busy = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if not port_free(p)]
        if busy:
            raise TritonStartError(f"tritonserver ports in use: {busy}")
        log_fh = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdout=log_fh,
                stderr=asyncio.subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,  # its own group: its stubs die with it
                preexec_fn=die_with_parent,
            )
        finally:
            log_fh.close()
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(f"{self.process.pid}\n")
        log.info("triton_starting", pid=self.process.pid, generation=self.generation)
        await self._wait_live()
        log.info("triton_live", pid=self.process.pid, http=self.http_url, grpc=self.grpc_url)

    async def _wait_live(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        url = f"http://{self.http_url}/v2/health/live"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise TritonStartError(
                        f"tritonserver exited with {self.process.returncode}: {self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        self._kill_group()
        raise TritonStartError(f"tritonserver not live in {self.start_timeout_s}s")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    async def _supervise(self) -> None:
        backoff = 0.2
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            log.warning("triton_died", returncode=code, generation=self.generation)
            for hook in self._on_down:
                hook()
            self._cleanup()
            while not self._stopping:
                try:
                    await self._spawn()
                except (TritonStartError, OSError) as err:
                    log.error("triton_restart_failed", error=str(err), backoff_s=backoff)
                    self._cleanup()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                break
            if self._stopping:
                return
            backoff = 0.2
            self.restarts += 1
            for up in self._on_up:
                try:
                    await up()
                except Exception as err:  # a hook's failure must not stop supervision
                    log.exception("triton_restart_hook_failed", error=str(err))

    def kill(self) -> None:
        """SIGKILL the server (a hung one): the supervisor sees it die and restarts it."""
        self._kill_group()

    def _kill_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        """Kill leftover stubs of the dead server and free its shared memory."""
        self._kill_group()
        prefix = f"cvops{os.getpid()}g{self.generation}_"
        shm = Path("/dev/shm")
        if shm.is_dir():
            for leftover in shm.glob(f"{prefix}*"):
                leftover.unlink(missing_ok=True)

    async def stop(self) -> None:
        """SIGTERM, wait for the exit timeout, then SIGKILL the group."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.exit_timeout_s + 5)
            except TimeoutError:
                pass
        self._cleanup()
        if proc is not None and proc.returncode is None:
            await proc.wait()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
