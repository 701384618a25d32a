"""Typed SDK for the cvops gateway: one httpx client, msgspec bodies, one error type.

Every response body is decoded into the structs of :mod:`cvops.contracts.api`; every
non-2xx answer becomes a :class:`CvopsError` built from the gateway's one error shape
``{"error": code, "detail": ...}``. Uploads stream the file in chunks and report progress.

Every write (POST, PUT, PATCH, DELETE) carries a fresh ``Idempotency-Key``; when the gateway
answers 502/503/504 or the connection fails, the write is sent again, a few times with a
growing pause, with the same key, so it happens once however often it is sent.
"""

from __future__ import annotations

import contextlib
import email.message
import mimetypes
import os
import tarfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from cvops.client.bundle import BundleCorrupt, file_sha256, verify_bundle
from cvops.client.sse import parse_sse
from cvops.contracts.api import (
    BenchmarkView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    CreateToken,
    CreateUser,
    DatasetView,
    DeploymentView,
    EngineArtifactView,
    ErrorBody,
    Health,
    JobCreated,
    JobStatus,
    JobSummary,
    JobView,
    LoginRequest,
    LoginResponse,
    ModelVersionView,
    ModelView,
    ReportView,
    StageChange,
    SystemView,
    TokenCreated,
    TokenView,
    UpdateUser,
    UploadResult,
    UserView,
)
from cvops.contracts.identity import ROLE_PERMISSIONS, Permission, Role
from cvops.contracts.registry import Stage

DEFAULT_URL = "http://127.0.0.1:8080"

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while a file moves."""

FeedEvent = tuple[int, str, dict[str, Any]]
"""``(stream sequence, event type, event as a dict)``: one message of an event feed."""

# Failures after which following a feed reconnects (the gateway restarted, the link dropped).
_RECONNECTABLE = ("unreachable", "transport_error", "timeout", "http_502", "http_503")

T = TypeVar("T")

# Writes are sent with an Idempotency-Key and sent again with it after these answers (the
# event log away, a proxy in between timing out) or a failed connection.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_RETRIED_STATUSES = frozenset({502, 503, 504})
_MAX_RETRY_PAUSE_S = 5.0

# The gateway may hold an upload's response until the registry's verdict is in.
_UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class CvopsError(Exception):
    """An answer of the gateway that is not a success (or no answer at all).

    Attributes:
        status: HTTP status (0 when no HTTP answer came back).
        code: machine-readable code, the ``error`` field of the gateway's error body.
        detail: the ``detail`` field: a sentence, or structured data.
    """

    def __init__(self, status: int, code: str, detail: object = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """``code: detail`` as one line for people."""
        if self.detail is None or self.detail == "":
            return self.code
        if isinstance(self.detail, str):
            return f"{self.code}: {self.detail}"
        return f"{self.code}: {msgspec.json.encode(self.detail).decode()}"


class Unreachable(CvopsError):
    """No connection could be made to a cvops endpoint (the gateway, or NATS)."""

    def __init__(self, what: str, url: str, reason: str) -> None:
        self.what = what
        self.url = url
        super().__init__(0, "unreachable", f"{what} at {url}: {reason}")


class GatewayUnreachable(Unreachable):
    """The gateway's port does not answer."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__("the gateway", url, reason)


def error_from_response(response: httpx.Response) -> CvopsError:
    """Map a non-2xx response to a :class:`CvopsError` (any body, never raises)."""
    try:
        body = msgspec.json.decode(response.content, type=ErrorBody)
        return CvopsError(response.status_code, body.error, body.detail)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = response.text.strip()[:500] or response.reason_phrase
        return CvopsError(response.status_code, f"http_{response.status_code}", text)


class ProgressReader:
    """A binary file whose reads report ``(bytes read, total)``.

    httpx reads a multipart file field in 64 KiB chunks, so wrapping the file is all it
    takes to stream an upload with progress and never hold it in memory.
    """

    def __init__(self, raw: IO[bytes], total: int, progress: Progress | None) -> None:
        self._raw = raw
        self.total = total
        self.done = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self.done += len(chunk)
            if self._progress is not None:
                self._progress(self.done, self.total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # httpx seeks to measure the length and to rewind before sending.
        self.done = self._raw.seek(offset, whence)
        return self.done

    def tell(self) -> int:
        return self._raw.tell()


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


class Client:
    """Synchronous client of the cvops gateway.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8080``.
        token: a session token (from :meth:`login`) or an API token; sent as
            ``Authorization: Bearer <token>``.
        timeout: seconds for ordinary requests (uploads and event feeds wait longer).
        transport: an httpx transport to use instead of the network (tests).
        write_attempts: how often a write is sent at most (with one ``Idempotency-Key``)
            when the gateway answers 502/503/504 or the connection fails.
        retry_pause_s: the pause before the first resend, doubled before each next one
            (a ``Retry-After`` of the gateway, up to 5 s, wins).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        write_attempts: int = 4,
        retry_pause_s: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.write_attempts = max(1, write_attempts)
        self.retry_pause_s = retry_pause_s
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
            headers={"User-Agent": "cvops-client/0.1"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @contextlib.contextmanager
    def _no_transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise GatewayUnreachable(self.base_url, str(err) or type(err).__name__) from err
        except httpx.TimeoutException as err:
            raise CvopsError(0, "timeout", f"{self.base_url} did not answer in time") from err
        except httpx.TransportError as err:
            raise CvopsError(0, "transport_error", str(err) or type(err).__name__) from err

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if method not in WRITE_METHODS:
            with self._no_transport_errors():
                return self._http.request(method, path, headers=self._headers(), **kwargs)
        return self._write(method, path, **kwargs)

    def _write(
        self, method: str, path: str, *, attempts: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a write with a fresh ``Idempotency-Key``; after a 502/503/504 or a failed
        connection, send it again with the same key (``attempts`` times at most)."""
        headers = {**self._headers(), "Idempotency-Key": str(uuid.uuid4())}
        attempts = attempts or self.write_attempts
        pause = self.retry_pause_s
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                with self._no_transport_errors():
                    response = self._http.request(method, path, headers=headers, **kwargs)
            except CvopsError:
                if last:
                    raise
                time.sleep(pause)
            else:
                if last or response.status_code not in _RETRIED_STATUSES:
                    return response
                time.sleep(_retry_after(response, pause))
            pause *= 2
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _call(self, method: str, path: str, type_: type[T], **kwargs: Any) -> T:
        response = self._send(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return self._decode(response, type_)

    @staticmethod
    def _decode(response: httpx.Response, type_: type[T]) -> T:
        try:
            return msgspec.json.decode(response.content, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            where = f"{response.request.method} {response.request.url.path}"
            raise CvopsError(response.status_code, "bad_response", f"{where}: {err}") from err

    @staticmethod
    def _json(body: msgspec.Struct) -> dict[str, Any]:
        # Fields left at None mean "unchanged"; leave them out of the request.
        return {k: v for k, v in msgspec.to_builtins(body).items() if v is not None}

    # -- identity ---------------------------------------------------------------------

    def login(self, username: str, password: str) -> LoginResponse:
        """Exchange a password for a session token; later calls of this client use it.

        Returns:
            the token, its expiry, and the user's role.
        """
        body = self._json(LoginRequest(username=username, password=password))
        session = self._call("POST", "/auth/login", LoginResponse, json=body)
        self.token = session.token
        return session

    def logout(self) -> None:
        """Revoke the token this client uses (the gateway forgets the session)."""
        response = self._send("POST", "/auth/logout")
        if response.is_error:
            raise error_from_response(response)
        self.token = None

    def me(self) -> UserView:
        """The user the current token belongs to."""
        return self._call("GET", "/auth/me", UserView)

    def require(self, permission: Permission) -> UserView:
        """Check that the current user's role grants ``permission`` (before a costly request).

        Returns:
            the current user.

        Raises:
            CvopsError: 403 ``forbidden``, as the gateway would answer, when the role lacks
                it (401 when the token is not accepted).
        """
        user = self.me()
        if permission not in ROLE_PERMISSIONS[user.role]:
            raise CvopsError(
                403, "forbidden", f"role {user.role!r} may not do this (needs {permission.value!r})"
            )
        return user

    def create_token(self, label: str = "") -> TokenCreated:
        """Issue an API token for the current user; the secret is in the answer only."""
        return self._call(
            "POST", "/auth/tokens", TokenCreated, json=self._json(CreateToken(label=label))
        )

    def list_tokens(self) -> list[TokenView]:
        """The current user's API tokens (no secrets)."""
        return self._call("GET", "/auth/tokens", list[TokenView])

    def revoke_token(self, token_id: str) -> None:
        """Revoke one of the current user's API tokens."""
        response = self._send("DELETE", f"/auth/tokens/{_segment(token_id)}")
        if response.is_error:
            raise error_from_response(response)

    def create_user(self, username: str, password: str, role: Role = "viewer") -> UserView:
        """Create a user (admin only)."""
        body = self._json(CreateUser(username=username, password=password, role=role))
        return self._call("POST", "/users", UserView, json=body)

    def list_users(self) -> list[UserView]:
        """Every user (admin only)."""
        return self._call("GET", "/users", list[UserView])

    def show_user(self, username: str) -> UserView:
        """One user (admin only)."""
        return self._call("GET", f"/users/{_segment(username)}", UserView)

    def update_user(
        self,
        username: str,
        *,
        role: Role | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> UserView:
        """Change a user's role, password or disabled flag; ``None`` leaves a field as is."""
        body = self._json(UpdateUser(role=role, password=password, disabled=disabled))
        return self._call("PATCH", f"/users/{_segment(username)}", UserView, json=body)

    # -- models -----------------------------------------------------------------------

    def upload_model(
        self,
        path: str | os.PathLike[str],
        name: str,
        architecture: str | None = None,
        num_classes: int | None = None,
        input_shape: str | Sequence[int] | None = None,
        description: str = "",
        progress: Progress | None = None,
    ) -> UploadResult:
        """Stream a model file to the registry and wait for its verdict.

        Args:
            path: ONNX, TorchScript, ``.pt2`` or safetensors file.
            name: model name; each upload adds the next version.
            architecture: zoo architecture (needed for safetensors weights).
            num_classes: number of classes of the head.
            input_shape: input shape without batch, ``"3,32,32"`` or ``(3, 32, 32)``.
            description: free text.
            progress: called as ``progress(bytes_sent, bytes_total)``.

        Returns:
            the upload's outcome: ``validated`` (with the version), ``rejected`` (with the
            reason) or ``pending`` (follow ``correlation_id`` with :meth:`events`).

        Raises:
            CvopsError: 403 ``forbidden`` before any byte is sent when the user's role may
                not upload (see :meth:`require`).
        """
        fields = {"name": name, "description": description}
        if architecture:
            fields["architecture"] = architecture
        if num_classes is not None:
            fields["num_classes"] = str(num_classes)
        if input_shape is not None:
            shape = input_shape if isinstance(input_shape, str) else ",".join(map(str, input_shape))
            fields["input_shape"] = shape.replace(" ", "")
        return self._upload("/models", path, fields, progress)

    def list_models(self) -> list[ModelView]:
        """Every registered model."""
        return self._call("GET", "/models", list[ModelView])

    def show_model(self, name: str) -> ModelView:
        """One model with its versions."""
        return self._call("GET", f"/models/{_segment(name)}", ModelView)

    def list_versions(self, name: str) -> list[ModelVersionView]:
        """The versions of one model, oldest first."""
        return self._call("GET", f"/models/{_segment(name)}/versions", list[ModelVersionView])

    def show_version(self, name: str, version: int) -> ModelVersionView:
        """One model version: format, tensors, parameter count, stage, lineage."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}"
        return self._call("GET", path, ModelVersionView)

    def set_stage(self, name: str, version: int, stage: Stage) -> ModelVersionView:
        """Move a version to ``none``, ``staging``, ``production`` or ``archived``."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}/stage"
        body = self._json(StageChange(stage=stage))
        return self._call("POST", path, ModelVersionView, json=body)

    def download_artifact(
        self,
        name: str,
        version: int,
        path: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> Path:
        """Stream a version's file to ``path`` (a file, or a directory to put it in).

        Returns:
            the file written; nothing is left behind when the transfer fails.
        """
        route = f"/models/{_segment(name)}/versions/{_segment(version)}/artifact"
        dest = Path(path)

        def target(response: httpx.Response) -> Path:
            if dest.is_dir():
                return dest / _attachment_name(response, f"{name}-v{version}")
            return dest

        return self._download(route, target, progress)

    def download_package(
        self,
        name: str,
        path: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> tuple[Path, list[str]]:
        """Stream a deployment's model bundle (``.tar.gz``) to ``path`` and verify it: its
        digest against the gateway's ``X-Content-Sha256``, each file against its SHA256SUMS.

        Args:
            name: the deployment.
            path: a file, or a directory to put ``NAME.tar.gz`` in.
            progress: called as ``progress(bytes_received, bytes_total)``.

        Returns:
            the file written and the files inside it that were checked. A bundle that fails
            a check is deleted and ``CvopsError`` (code ``corrupt_bundle``) raised.
        """
        route = f"/deployments/{_segment(name)}/package"
        dest = Path(path)
        expected: list[str] = []

        def target(response: httpx.Response) -> Path:
            expected.append(response.headers.get("x-content-sha256", ""))
            if dest.is_dir():
                return dest / _attachment_name(response, f"{name}.tar.gz")
            return dest

        written = self._download(route, target, progress)
        try:
            if expected[0] and file_sha256(written) != expected[0]:
                raise BundleCorrupt(f"{written.name} does not have the digest the gateway sent")
            return written, verify_bundle(written)
        except (BundleCorrupt, OSError, tarfile.TarError) as err:
            written.unlink(missing_ok=True)
            raise CvopsError(0, "corrupt_bundle", str(err)) from err

    def _download(
        self,
        route: str,
        target: Callable[[httpx.Response], Path],
        progress: Progress | None,
    ) -> Path:
        """Stream ``route`` into the file ``target(response)`` names (through a ``.part``)."""
        with self._no_transport_errors():
            request = self._http.build_request(
                "GET", route, headers=self._headers(), timeout=_UPLOAD_TIMEOUT
            )
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                dest = target(response)
                total = int(response.headers.get("content-length") or 0)
                partial = dest.with_name(dest.name + ".part")
                try:
                    with partial.open("wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                            if progress is not None:
                                progress(out.tell(), total)
                    os.replace(partial, dest)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
            finally:
                response.close()
        return dest

    # -- data sets --------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        name: str,
        description: str = "",
        seed: int = 0,
        progress: Progress | None = None,
    ) -> UploadResult:
        """Stream a data set (ImageFolder ``.zip`` or ``.npz``) and wait for its verdict.

        Args:
            path: the archive.
            name: data-set name; each upload adds the next version.
            description: free text.
            seed: seed of the train/val/test split.
            progress: called as ``progress(bytes_sent, bytes_total)``.

        Returns:
            the upload's outcome, as for :meth:`upload_model`.

        Raises:
            CvopsError: as for :meth:`upload_model`.
        """
        fields = {"name": name, "description": description, "seed": str(seed)}
        return self._upload("/datasets", path, fields, progress)

    def list_datasets(self) -> list[DatasetView]:
        """Every registered data set."""
        return self._call("GET", "/datasets", list[DatasetView])

    def show_dataset(self, name: str) -> DatasetView:
        """One data set: classes, counts, image sizes, splits."""
        return self._call("GET", f"/datasets/{_segment(name)}", DatasetView)

    # -- events and health ------------------------------------------------------------

    def show_upload(self, upload_id: str) -> UploadResult:
        """An upload's state (``pending`` until the registry's verdict)."""
        return self._call("GET", f"/uploads/{_segment(upload_id)}", UploadResult)

    def events(
        self, correlation_id: str, *, follow: bool = True, last_event_id: int | None = None
    ) -> Generator[tuple[int, str, dict[str, Any]], None, None]:
        """The events of one request or job: those so far, then live ones as appended.

        Args:
            correlation_id: the ``X-Correlation-Id`` of a request, or a job id.
            follow: keep the feed open for new events; False ends it after the replay.
            last_event_id: resume after this stream sequence.

        Yields:
            ``(stream sequence, event type, event as a dict)`` until the gateway ends
            the feed (or the caller stops iterating).
        """
        headers = {**self._headers(), "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        with self._no_transport_errors():
            request = self._http.build_request(
                "GET",
                f"/events/{_segment(correlation_id)}",
                params={} if follow else {"follow": "false"},
                headers=headers,
                timeout=httpx.Timeout(None, connect=5.0),
            )
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                for message in parse_sse(response.iter_lines()):
                    yield message.seq, message.type, message.data
            finally:
                response.close()

    def follow(
        self,
        correlation_id: str,
        until: Callable[[str, dict[str, Any]], bool],
        *,
        reconnects: int = 5,
        retry_delay_s: float = 1.0,
    ) -> Generator[FeedEvent, None, None]:
        """Follow a request's or job's feed until ``until(type, event)`` is true.

        A feed that breaks off (the gateway restarts, the connection drops) is resumed
        after the last event seen, up to ``reconnects`` times in a row.

        Yields:
            every event of the feed up to and including the one ``until`` accepts.

        Raises:
            CvopsError: ``feed_ended`` when the feed could not be resumed.
        """
        last: int | None = None
        failures = 0
        while True:
            feed = self.events(correlation_id, last_event_id=last)
            try:
                for seq, event_type, data in feed:
                    last, failures = seq, 0
                    yield seq, event_type, data
                    if until(event_type, data):
                        return
                reason = "the gateway ended the event feed"
            except CvopsError as err:
                if err.code not in _RECONNECTABLE:
                    raise
                reason = err.message
            finally:
                feed.close()
            failures += 1
            if failures > reconnects:
                raise CvopsError(0, "feed_ended", f"{reason}; follow {correlation_id} again later")
            time.sleep(retry_delay_s)

    # -- training jobs ----------------------------------------------------------------

    def create_job(self, request: CreateJob) -> JobCreated:
        """Start a training job (a genetic search, or one run with ``job_type="single"``).

        Returns:
            the job id and the correlation id whose feed (:meth:`events`) shows its progress.
        """
        return self._call("POST", "/jobs", JobCreated, json=self._json(request))

    def list_jobs(self, status: JobStatus | None = None) -> list[JobSummary]:
        """Training jobs, newest first; ``status`` filters."""
        params = {"status": status} if status else {}
        return self._call("GET", "/jobs", list[JobSummary], params=params)

    def show_job(self, job_id: str) -> JobView:
        """A job: status, plan, generations, trials with metrics, Pareto front, models."""
        return self._call("GET", f"/jobs/{_segment(job_id)}", JobView)

    def cancel_job(self, job_id: str) -> JobView:
        """Ask the trainer to stop a job (it stops within seconds)."""
        return self._call("POST", f"/jobs/{_segment(job_id)}/cancel", JobView)

    # -- deployments ------------------------------------------------------------------

    def deploy(self, request: CreateDeployment) -> DeploymentView:
        """Serve a model version behind Triton; the router answers ready or failed.

        Returns:
            the deployment in ``requested``; follow its ``correlation_id`` for the outcome.
        """
        return self._call("POST", "/deployments", DeploymentView, json=self._json(request))

    def list_deployments(self) -> list[DeploymentView]:
        """Every deployment, retired ones included."""
        return self._call("GET", "/deployments", list[DeploymentView])

    def show_deployment(self, name: str) -> DeploymentView:
        """One deployment: spec, status, the version it serves."""
        return self._call("GET", f"/deployments/{_segment(name)}", DeploymentView)

    def retire_deployment(self, name: str) -> DeploymentView:
        """Undeploy; the router answers ``deployment.retired``."""
        return self._call("DELETE", f"/deployments/{_segment(name)}", DeploymentView)

    # -- conversions and benchmarks ---------------------------------------------------

    def convert(self, request: CreateConversion) -> JobCreated:
        """Convert a model version to engines, each held to the accuracy gate."""
        return self._call("POST", "/conversions", JobCreated, json=self._json(request))

    def show_conversion(self, job_id: str) -> ConversionView:
        """A conversion: each target produced (with parity), rejected or unavailable."""
        return self._call("GET", f"/conversions/{_segment(job_id)}", ConversionView)

    def list_engine_artifacts(self, name: str, version: int) -> list[EngineArtifactView]:
        """The engines converted from a model version, with their parity reports."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}/artifacts"
        return self._call("GET", path, list[EngineArtifactView])

    def benchmark(self, request: CreateBenchmark) -> JobCreated:
        """Benchmark the engines of a model version and get a recommendation."""
        return self._call("POST", "/benchmarks", JobCreated, json=self._json(request))

    def show_benchmark(self, job_id: str) -> BenchmarkView:
        """A benchmark: measured rows and the recommendation under the SLA."""
        return self._call("GET", f"/benchmarks/{_segment(job_id)}", BenchmarkView)

    # -- reports ----------------------------------------------------------------------

    def report(self, name: str, version: int) -> ReportView:
        """The newest report of a model version: sections, what the missing ones wait for,
        charts, lineage and the paths of its files (404 ``not_found``: none yet)."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}/report"
        return self._call("GET", path, ReportView)

    def download_report(
        self,
        name: str,
        version: int,
        kind: str = "html",
        dest: str | os.PathLike[str] = ".",
        progress: Progress | None = None,
    ) -> Path:
        """Stream a file of a version's newest report to ``dest``.

        Args:
            kind: ``html`` (self-contained, works offline), ``pdf``, ``json`` (the data), or a
                chart as ``<chart>.png`` (names in :meth:`report`'s ``charts``).
            dest: the file to write, or a directory to put ``<model>-v<version>-report.<kind>``
                (a chart: ``<model>-v<version>-<chart>.png``) in.

        Returns:
            the file written; nothing is left behind when the transfer fails.
        """
        base = f"/models/{_segment(name)}/versions/{_segment(version)}/report"
        if kind in REPORT_FILES:
            route, filename = f"{base}.{kind}", report_filename(name, version, kind)
        elif kind.endswith(".png") and kind != ".png":
            route = f"{base}/charts/{_segment(kind)}"
            filename = f"{_safe_name(name)}-v{version}-{_safe_name(kind)}"
        else:
            raise ValueError(f"kind must be html, pdf, json or <chart>.png, not {kind!r}")
        where = Path(dest)
        return self._download(
            route, lambda _r: where / filename if where.is_dir() else where, progress
        )

    def health(self, *, ready: bool = True) -> Health:
        """``/health/ready`` (NATS reachable, projection lag) or ``/health/live``."""
        response = self._send("GET", "/health/ready" if ready else "/health/live")
        if response.status_code == 503:  # not ready: the body still says why
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                return msgspec.json.decode(response.content, type=Health)
        if response.is_error:
            raise error_from_response(response)
        return self._decode(response, Health)

    def system(self) -> SystemView:
        """``/system``: services and their instances (version, health, lag, pending work),
        the event streams, each host's GPUs and their leases."""
        return self._call("GET", "/system", SystemView)

    # -- uploads ----------------------------------------------------------------------

    def _upload(
        self,
        route: str,
        path: str | os.PathLike[str],
        fields: dict[str, str],
        progress: Progress | None,
    ) -> UploadResult:
        # The gateway refuses a role without the permission before it reads the body, but
        # only once the body has been sent: ask first, and do not send it in vain.
        self.require(Permission.WRITE)
        path = Path(path)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as raw:
            body = ProgressReader(raw, os.fstat(raw.fileno()).st_size, progress)
            response = self._send(
                "POST",
                route,
                data=fields,
                files={"file": (path.name, body, media_type)},
                timeout=_UPLOAD_TIMEOUT,
            )
        if response.status_code in (201, 202, 422):
            # 422 is also how a malformed form is refused; then the error shape applies.
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                return msgspec.json.decode(response.content, type=UploadResult)
        if response.is_error:
            raise error_from_response(response)
        return self._decode(response, UploadResult)


def _retry_after(response: httpx.Response, default: float) -> float:
    """The seconds a response's ``Retry-After`` asks for (at most 5), else ``default``."""
    try:
        return min(float(response.headers["retry-after"]), _MAX_RETRY_PAUSE_S)
    except (KeyError, ValueError):
        return default


REPORT_FILES = ("html", "pdf", "json")
"""The files of a report besides its charts (``Client.download_report`` kinds)."""


def _safe_name(name: str) -> str:
    """A name as one file-name component (a model name never makes a path)."""
    return name.replace("/", "_").replace("\\", "_").lstrip(".") or "_"


def report_filename(name: str, version: int, kind: str) -> str:
    """``<model>-v<version>-report.<kind>``: where ``cvops report`` writes a report file."""
    return f"{_safe_name(name)}-v{version}-report.{kind}"


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    header = response.headers.get("content-disposition", "")
    if header:
        message = email.message.Message()
        message["content-disposition"] = header
        filename = message.get_filename()
        if filename and Path(filename).name not in ("", ".", ".."):
            return Path(filename).name
    return fallback
