"""nginx as the router's HTTP data plane; the router is its control plane.

A Python hop costs 180-280 µs of CPU per request on 2 cores (measured by
``./justw bench-serving``), so on the HTTP port nginx answers infer itself: an njs rule
(``dataplane.js``, the same rule as ``proxy.py``) checks the bearer token, resolves the
version (pinned, canary by weight, sticky by ``X-Request-Key``) and names the upstream
group of the Triton instances that serve it; nginx sends the bytes there with keep-alive,
least-connections and one retry elsewhere on a connection failure (the body is streamed
on as it arrives, so not once it went out). Every other route goes to the router's aiohttp
app over loopback. gRPC stays in the router: nginx cannot route it by model name (the name
is inside the protobuf body).

The router keeps nginx's state in files that the rule reads per request, one per deployment
(``routes/<name>``) and one per live token digest (``tokens/<sha256>``), written atomically
on every change: deploying, canary weights, retiring, revoking a token or disabling a user
need no reload, so no keep-alive connection is closed under a client. A reload (SIGHUP,
graceful) happens only when a new set of Triton instances must be an upstream group (an
instance went down or came back). nginx logs each infer request to ``infer.log``; the router
tails it into ``cvops_router_requests_total`` and the latency histogram.

nginx comes from Debian (``nginx`` and ``libnginx-mod-http-js``; ``deploy/system-packages.sh``
takes just the binary and the njs module). Where either is missing the router serves HTTP
itself (``CVOPS_ROUTER_DATA_PLANE=auto``, the default, says so in its log);
``CVOPS_ROUTER_DATA_PLANE=python`` always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiohttp
import msgspec

from cvops.core import Settings, get_logger
from cvops.domain.identity import TokenState, UserState, token_refusal
from cvops.inference_router.metrics import RouterMetrics
from cvops.inference_router.projection import DeploymentRow
from cvops.inference_router.routing import Instance, Pool
from cvops.inference_router.triton import die_with_parent

log = get_logger(__name__)

NGINX_CANDIDATES = ("/usr/local/sbin/nginx", "/usr/sbin/nginx")
NJS_CANDIDATES = (
    "/usr/local/lib/nginx/modules/ngx_http_js_module.so",
    "/usr/lib/nginx/modules/ngx_http_js_module.so",
)
INTERNAL_GROUP = "cvops_internal"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
TAIL_INTERVAL_S = 0.25
ROTATE_BYTES = 16 * 1024**2
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
SUBSET_LIMIT = 4
INFER_TIMEOUT_S = 120  # as proxy.INFER_TIMEOUT_S
FORWARD_TIMEOUT_S = 300  # as front.FORWARD_TIMEOUT_S


class DataPlaneUnavailable(RuntimeError):
    """nginx cannot run here (missing binary or module, a refused configuration)."""


@dataclasses.dataclass(frozen=True)
class Nginx:
    """Where the nginx binary and its njs module are."""

    binary: str
    njs_module: str


def find_nginx(settings: Settings) -> Nginx:
    """The nginx to run, or DataPlaneUnavailable saying what is missing."""
    binary = settings.nginx_binary or shutil.which("nginx") or _first(NGINX_CANDIDATES)
    if not binary or not os.access(binary, os.X_OK):
        raise DataPlaneUnavailable(
            "nginx not found (install Debian's nginx, or run deploy/system-packages.sh)"
        )
    module = settings.nginx_njs_module or _first(NJS_CANDIDATES)
    if not module:
        raise DataPlaneUnavailable(
            "nginx's njs module not found (Debian's libnginx-mod-http-js; "
            "deploy/system-packages.sh installs it)"
        )
    return Nginx(binary, module)


def _first(paths: Iterable[str]) -> str:
    return next((p for p in paths if os.path.exists(p)), "")


# -- the state the njs rule reads -------------------------------------------------------


def group_name(instances: Iterable[Instance]) -> str:
    """A stable upstream name for a set of Triton instances."""
    addresses = sorted({i.http for i in instances})
    return "cvops_g" + hashlib.sha256(",".join(addresses).encode()).hexdigest()[:12]


def initial_groups(instances: list[Instance]) -> dict[str, list[str]]:
    """The upstream groups written before any is needed: every set of instances a version
    can be served by (up to ``SUBSET_LIMIT`` instances; beyond, all and each alone), so
    that deploying needs no reload."""
    if len(instances) <= SUBSET_LIMIT:
        sets = [
            list(c)
            for k in range(1, len(instances) + 1)
            for c in itertools.combinations(instances, k)
        ]
    else:
        sets = [instances, *([i] for i in instances)]
    return {group_name(s): sorted(i.http for i in s) for s in sets}


def route_entry(d: DeploymentRow, pool: Pool) -> tuple[dict[str, object], dict[str, list[str]]]:
    """One deployment's file for the njs rule, and the upstream groups it names."""
    groups: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    if d.routable:
        for v in d.versions:
            serving = [i for i in pool.instances if i.up and i.serves(d.name, v)]
            if serving:
                name = group_name(serving)
                groups[str(v)] = name
                members[name] = sorted(i.http for i in serving)
    entry = {
        "public": d.public,
        "routable": d.routable,
        "versions": list(d.versions),
        "primary": d.version,
        "canary": d.canary_slot,
        "weight_bp": d.canary_weight_bp,
        "groups": groups,
    }
    return entry, members


def token_entry(token: TokenState, user: UserState | None) -> dict[str, object]:
    """One token's file: ``token_refusal`` split around its only time-dependent step."""
    timeless = msgspec.structs.replace(token, revoked=False, expires_at=None)
    return {
        "before": "token revoked" if token.revoked else "",
        "expires": token.expires_at.timestamp() if token.expires_at else 0,
        "after": token_refusal(timeless, user, datetime.now(UTC)) or "",
    }


class StateFiles:
    """A directory of small JSON files, each rewritten atomically when it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: dict[str, bytes] = {}

    def reset(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.written.clear()

    def sync(self, wanted: dict[str, object]) -> int:
        """Make the directory hold exactly ``wanted``; returns the files changed."""
        changed = 0
        for name, value in wanted.items():
            data = json.dumps(value, sort_keys=True).encode()
            if self.written.get(name) == data:
                continue
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / name)
            self.written[name] = data
            changed += 1
        for name in [n for n in self.written if n not in wanted]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
            del self.written[name]
            changed += 1
        return changed


# -- nginx.conf -----------------------------------------------------------------------------


def render_config(
    *,
    workdir: Path,
    njs_module: str,
    listen: str,
    internal: str,
    groups: dict[str, list[str]],
    max_body: int,
    generation: int,
) -> str:
    """The whole nginx.conf: the HTTP port, the infer location, the upstream groups."""
    upstreams = "\n".join(
        f"    upstream {name} {{\n        least_conn;\n"
        + "".join(f"        server {a} max_fails=3 fail_timeout=1s;\n" for a in addresses)
        + "        keepalive 64;\n        keepalive_timeout 30s;\n    }"
        for name, addresses in sorted(groups.items())
    )
    unavailable = (
        '{\\"error\\": \\"model \'$cvops_model\' is unavailable: '
        'no Triton instance answered; retry\\"}'
    )
    # a root master would run its workers as nobody, who cannot read the router's files
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""# written by cvops' inference router (dataplane.py); edits are overwritten
{user}load_module {njs_module};
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    server_tokens off;
    default_type application/json;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    client_max_body_size {max_body};
    client_body_buffer_size 4m;
    proxy_buffer_size 64k;
    proxy_buffers 64 64k;
    proxy_busy_buffers_size 128k;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    js_import cvops from {workdir}/dataplane.js;
    js_var $cvops_state {workdir}/state;
    js_var $cvops_version -;
    js_var $cvops_upstream;
    js_var $cvops_error;
    js_set $cvops_status cvops.route;
    log_format cvops_infer '$cvops_model $cvops_version $status $request_time';

    upstream {INTERNAL_GROUP} {{
        server {internal};
        keepalive 16;
    }}
{upstreams}

    server {{
        listen {listen} backlog=1024;
        proxy_http_version 1.1;

        location ~ ^/v2/models/(?<cvops_model>[^/]+)(?:/versions/(?<cvops_pinned>[^/]+))?/infer$ {{
            if ($request_method != POST) {{
                proxy_pass http://{INTERNAL_GROUP};
                break;
            }}
            access_log {workdir}/infer.log cvops_infer buffer=32k flush=200ms;
            set $cvops_s $cvops_status;
            if ($cvops_s = 401) {{
                add_header WWW-Authenticate Bearer always;
                return 401 $cvops_error;
            }}
            if ($cvops_s = 400) {{
                return 400 $cvops_error;
            }}
            if ($cvops_s = 404) {{
                return 404 $cvops_error;
            }}
            if ($cvops_s = 503) {{
                add_header Retry-After 1 always;
                return 503 $cvops_error;
            }}
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Request-Key "";
            # the body goes on to Triton as it arrives (a 224x224 float tensor is 600 KB):
            # a retry elsewhere is then possible only before the first byte went out
            proxy_request_buffering off;
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            proxy_send_timeout {INFER_TIMEOUT_S}s;
            proxy_read_timeout {INFER_TIMEOUT_S}s;
            proxy_pass http://$cvops_upstream/v2/models/$cvops_model/versions/$cvops_version/infer;
            error_page 502 = @unavailable;
            error_page 504 = @timeout;
            error_page 413 = @too_large;
        }}
        location / {{
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_read_timeout {FORWARD_TIMEOUT_S}s;
            proxy_send_timeout {FORWARD_TIMEOUT_S}s;
            proxy_pass http://{INTERNAL_GROUP};
            error_page 502 504 = @restarting;
            error_page 413 = @too_large;
        }}
        location @unavailable {{
            add_header Retry-After 1 always;
            return 503 "{unavailable}";
        }}
        location @timeout {{
            return 504 '{{"error": "Triton did not answer within {INFER_TIMEOUT_S} s"}}';
        }}
        location @too_large {{
            return 413 '{{"error": "request body larger than {max_body} bytes"}}';
        }}
        location @restarting {{
            add_header Retry-After 1 always;
            return 503 '{{"error": "the router is restarting; retry"}}';
        }}
    }}
    server {{
        listen unix:{workdir}/control.sock;
        location = /generation {{
            return 200 "{generation}";
        }}
    }}
}}
"""


# -- the process -----------------------------------------------------------------------------


class NginxDataPlane:
    """One supervised nginx, its configuration and the state files its rule reads."""

    def __init__(
        self,
        nginx: Nginx,
        *,
        workdir: Path,
        host: str,
        port: int,
        internal: str,
        max_body: int,
        pool: Pool,
        metrics: RouterMetrics,
    ) -> None:
        self.nginx = nginx
        self.workdir = workdir
        self.listen = f"{host}:{port}"
        self.internal = internal
        self.max_body = max_body
        self.pool = pool
        self.metrics = metrics
        self.routes = StateFiles(workdir / "state" / "routes")
        self.tokens = StateFiles(workdir / "state" / "tokens")
        self.groups = initial_groups(pool.instances)
        self.generation = 0
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._pending: dict[str, object] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._log_offset = 0

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nginx.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "infer.log"

    def describe(self) -> dict[str, object]:
        """What ``/v1/status`` says of it."""
        proc = self.process
        return {
            "kind": "nginx",
            "pid": proc.pid if proc is not None and proc.returncode is None else None,
            "restarts": self.restarts,
            "generation": self.generation,
            "upstream_groups": len(self.groups),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Empty the state, write the script and the config, and check it (``nginx -t``)."""
        for sub in ("tmp", "state"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.routes.reset()
        self.tokens.reset()
        script = resources.files("cvops.inference_router").joinpath("dataplane.js")
        (self.workdir / "dataplane.js").write_bytes(script.read_bytes())
        self.access_log.unlink(missing_ok=True)
        self._log_offset = 0
        self._write_config()
        try:
            check = subprocess.run(
                [*self._argv(), "-t", "-q"], capture_output=True, text=True, check=False
            )
        except OSError as err:
            raise DataPlaneUnavailable(f"nginx cannot run: {err}") from err
        if check.returncode != 0:
            raise DataPlaneUnavailable(f"nginx refused its configuration: {check.stderr.strip()}")

    async def launch(self) -> None:
        """Start nginx (after ``prepare`` and a first ``sync``) and its supervisor."""
        await self._spawn()
        self._tasks.append(asyncio.create_task(self._supervise(), name="nginx-supervisor"))
        self._tasks.append(asyncio.create_task(self._tail(), name="nginx-access-log"))

    def _argv(self) -> list[str]:
        return [self.nginx.binary, "-p", str(self.workdir), "-c", str(self.conf), "-e", "stderr"]

    async def _spawn(self) -> None:
        # a killed nginx leaves its control socket behind, and nginx does not bind over one
        (self.workdir / "control.sock").unlink(missing_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        if not await self._answers(self.generation, START_TIMEOUT_S):
            code = self.process.returncode
            raise DataPlaneUnavailable(
                f"nginx did not start (exit {code}): {self._log_tail()}"
                if code is not None
                else "nginx did not answer on its control socket"
            )
        log.info("nginx_started", pid=self.process.pid, listen=self.listen)

    async def _supervise(self) -> None:
        """Start nginx again when it dies (its state files are still there)."""
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            self.restarts += 1
            delay = RESTART_BACKOFF_S[min(self.restarts - 1, len(RESTART_BACKOFF_S) - 1)]
            log.error("nginx_exited", code=code, restarts=self.restarts, log=self._log_tail())
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except (DataPlaneUnavailable, OSError) as err:
                log.error("nginx_restart_failed", error=str(err))

    async def stop(self) -> None:
        """Graceful stop (SIGQUIT: requests in flight finish), SIGKILL after a timeout."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reloading is not None:
            self._reloading.cancel()
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGQUIT)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        self._read_access_log()

    # -- state -------------------------------------------------------------------------------
    def sync(
        self,
        deployments: Iterable[DeploymentRow],
        tokens: dict[str, tuple[TokenState, UserState | None]],
    ) -> None:
        """Make nginx route as the router would now: files at once, a reload (then the
        files) only when a new set of instances must become an upstream group."""
        wanted: dict[str, object] = {}
        groups: dict[str, list[str]] = {}
        for d in deployments:
            wanted[d.name], members = route_entry(d, self.pool)
            groups.update(members)
        self.tokens.sync({digest: token_entry(t, u) for digest, (t, u) in tokens.items()})
        if set(groups) <= set(self.groups):
            self.routes.sync(wanted)
            return
        self.groups.update(groups)
        if self.process is None:  # not started yet: nothing to reload
            self._write_config()
            self.routes.sync(wanted)
            return
        self._pending = wanted
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while self._pending is not None:
            wanted, self._pending = self._pending, None
            self._write_config()
            if self.process is not None and self.process.returncode is None:
                self.process.send_signal(signal.SIGHUP)
                if not await self._answers(self.generation, START_TIMEOUT_S):
                    log.error("nginx_reload_not_seen", generation=self.generation)
            self.routes.sync(wanted)
            log.info("nginx_reloaded", generation=self.generation, groups=len(self.groups))

    def _write_config(self) -> None:
        self.generation += 1
        text = render_config(
            workdir=self.workdir,
            njs_module=self.nginx.njs_module,
            listen=self.listen,
            internal=self.internal,
            groups=self.groups,
            max_body=self.max_body,
            generation=self.generation,
        )
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.conf)

    async def _answers(self, generation: int, timeout: float) -> bool:
        """Whether nginx's workers run ``generation`` (its control socket says) in time."""
        deadline = time.monotonic() + timeout
        connector = aiohttp.UnixConnector(path=str(self.workdir / "control.sock"))
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    return False
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(
                        "http://nginx/generation", timeout=aiohttp.ClientTimeout(total=1)
                    ) as resp:
                        if resp.status == 200 and int(await resp.text()) >= generation:
                            return True
                await asyncio.sleep(0.02)
        return False

    # -- metrics -----------------------------------------------------------------------------
    async def _tail(self) -> None:
        """Count each logged infer request; rotate the log past ``ROTATE_BYTES``."""
        while True:
            await asyncio.sleep(TAIL_INTERVAL_S)
            self._read_access_log()
            if self._log_offset > ROTATE_BYTES and self.process is not None:
                rotated = self.access_log.with_suffix(".log.1")
                os.replace(self.access_log, rotated)
                self.process.send_signal(signal.SIGUSR1)  # reopen: a new infer.log
                await asyncio.sleep(1.0)  # the workers flush into the old file, then reopen
                self._read_access_log(rotated)
                rotated.unlink(missing_ok=True)
                self._log_offset = 0

    def _read_access_log(self, path: Path | None = None) -> None:
        try:
            with open(path or self.access_log, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].splitlines():
            parts = line.decode("latin-1").split(" ")
            if len(parts) != 4:
                continue
            model, version, code, seconds = parts
            with contextlib.suppress(ValueError):
                self.metrics.observe(model, version, "http", code, float(seconds))

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(text[-lines:])
