"""A stand-in gateway for tests of code that uses the SDK (the CLI, the TUI).

It serves the documented routes through ``httpx.MockTransport`` with the structs of
``cvops.contracts.api`` and the one error shape, from in-memory state. It is a test aid,
not a gateway: tests that need the real one start ``cvops.gateway``.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import msgspec

from cvops.contracts.api import (
    BenchmarkView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    DatasetView,
    DeploymentView,
    EngineArtifactView,
    JobCreated,
    JobSummary,
    JobView,
    LoginResponse,
    ModelVersionView,
    ModelView,
    TokenCreated,
    TokenView,
    UploadResult,
    UserView,
)
from cvops.contracts.common import ArtifactRef, TensorSpec
from cvops.contracts.registry import ImageStats, SplitCounts
from cvops.contracts.training import ARCHITECTURES
from cvops.testing import client_fakes as fake_services

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ADMIN_PASSWORD = "admin-pass-123"


def _json(status: int, body: object, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=msgspec.json.encode(body),
        headers={"content-type": "application/json", **headers},
    )


def _error(status: int, code: str, detail: object = None) -> httpx.Response:
    return _json(status, {"error": code, "detail": detail})


@dataclass
class Upload:
    route: str
    fields: dict[str, str]
    filename: str
    content: bytes


@dataclass
class FakeGateway:
    """In-memory gateway state plus a log of what the client sent."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    api_tokens: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, list[ModelVersionView]] = field(default_factory=dict)
    datasets: dict[str, DatasetView] = field(default_factory=dict)
    events: dict[str, str] = field(default_factory=dict)  # correlation id -> SSE body
    uploads: list[Upload] = field(default_factory=list)
    results: dict[str, UploadResult] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    artifact: bytes = b"onnx-bytes" * 1000
    outage: httpx.Response | None = None  # when set, every request gets this answer
    jobs: dict[str, JobView] = field(default_factory=dict)
    deployments: dict[str, DeploymentView] = field(default_factory=dict)
    conversions: dict[str, ConversionView] = field(default_factory=dict)
    benchmarks: dict[str, BenchmarkView] = field(default_factory=dict)
    engines: dict[tuple[str, int], list[EngineArtifactView]] = field(default_factory=dict)
    reports: dict[tuple[str, int], fake_services.ReportStory] = field(default_factory=dict)
    # how the scripted services answer: a job "completed", "failed" or left "running";
    # a deployment "ready" or "failed"; a conversion or benchmark "completed" or "failed"
    job_outcome: str = "completed"
    deploy_outcome: str = "ready"
    conversion_outcome: str = "completed"
    benchmark_outcome: str = "completed"

    def __post_init__(self) -> None:
        self.users["admin"] = {"password": ADMIN_PASSWORD, "role": "admin", "disabled": False}

    # -- routing ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.outage is not None:
            return self.outage
        routes: list[tuple[str, str, Callable[..., httpx.Response], bool]] = [
            ("POST", r"/auth/login", self.login, False),
            ("POST", r"/auth/logout", self.logout, True),
            ("GET", r"/auth/me", self.me, True),
            ("POST", r"/auth/tokens", self.create_token, True),
            ("GET", r"/auth/tokens", self.list_tokens, True),
            ("DELETE", r"/auth/tokens/(?P<token_id>[^/]+)", self.revoke_token, True),
            ("POST", r"/users", self.create_user, True),
            ("GET", r"/users", self.list_users, True),
            ("GET", r"/users/(?P<username>[^/]+)", self.show_user, True),
            ("PATCH", r"/users/(?P<username>[^/]+)", self.update_user, True),
            ("POST", r"/models", self.upload, True),
            ("GET", r"/models", self.list_models, True),
            ("GET", r"/models/(?P<name>[^/]+)", self.show_model, True),
            ("GET", r"/models/(?P<name>[^/]+)/versions", self.list_versions, True),
            ("GET", r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)", self.show_version, True),
            ("POST", r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)/stage", self.stage, True),
            ("GET", r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)/artifact", self.artifact_, True),
            ("POST", r"/datasets", self.upload, True),
            ("GET", r"/datasets", self.list_datasets, True),
            ("GET", r"/datasets/(?P<name>[^/]+)", self.show_dataset, True),
            ("GET", r"/uploads/(?P<upload_id>[^/]+)", self.show_upload, True),
            ("GET", r"/events/(?P<cid>[^/]+)", self.event_feed, True),
            ("GET", r"/health/ready", self.health, False),
            ("POST", r"/jobs", self.create_job, True),
            ("GET", r"/jobs", self.list_jobs, True),
            ("GET", r"/jobs/(?P<job_id>[^/]+)", self.show_job, True),
            ("POST", r"/jobs/(?P<job_id>[^/]+)/cancel", self.cancel_job, True),
            ("POST", r"/deployments", self.deploy, True),
            ("GET", r"/deployments", self.list_deployments, True),
            ("GET", r"/deployments/(?P<name>[^/]+)", self.show_deployment, True),
            ("DELETE", r"/deployments/(?P<name>[^/]+)", self.retire, True),
            ("POST", r"/conversions", self.convert, True),
            ("GET", r"/conversions/(?P<job_id>[^/]+)", self.show_conversion, True),
            ("GET", r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)/artifacts", self.engines_, True),
            ("POST", r"/benchmarks", self.benchmark, True),
            ("GET", r"/benchmarks/(?P<job_id>[^/]+)", self.show_benchmark, True),
            ("GET", r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)/report", self.report, True),
            (
                "GET",
                r"/models/(?P<name>[^/]+)/versions/(?P<v>\d+)/report(?P<file>\.(html|pdf|json)|/charts/[^/]+)",
                self.report_file,
                True,
            ),
        ]
        for method, pattern, handler, needs_auth in routes:
            match = re.fullmatch(pattern, request.url.path)
            if match and request.method == method:
                user = None
                if needs_auth:
                    user = self._user_of(request)
                    if user is None:
                        return _error(401, "unauthorized", "missing or invalid bearer token")
                return handler(request, user, **match.groupdict())
        return _error(404, "not_found", f"no route {request.method} {request.url.path}")

    def _user_of(self, request: httpx.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if token in self.sessions:
            return self.sessions[token]
        for t in self.api_tokens:
            if t["token"] == token and not t["revoked"]:
                return str(t["owner"])
        return None

    def _view(self, username: str) -> UserView:
        u = self.users[username]
        return UserView(username=username, role=u["role"], created_at=T0, disabled=u["disabled"])

    def _admin_only(self, user: str) -> httpx.Response | None:
        if self.users[user]["role"] != "admin":
            return _error(403, "forbidden", f"role {self.users[user]['role']} may not do this")
        return None

    # -- identity -----------------------------------------------------------------------

    def login(self, request: httpx.Request, _user: None) -> httpx.Response:
        body = msgspec.json.decode(request.content)
        u = self.users.get(body["username"])
        if u is None or u["password"] != body["password"]:
            return _error(401, "invalid_credentials", "wrong username or password")
        token = f"session-{body['username']}-{len(self.sessions)}"
        self.sessions[token] = body["username"]
        return _json(
            200,
            LoginResponse(
                token=token,
                expires_at=T0 + timedelta(hours=12),
                username=body["username"],
                role=u["role"],
            ),
        )

    def logout(self, request: httpx.Request, _user: str) -> httpx.Response:
        self.sessions.pop(request.headers["authorization"].removeprefix("Bearer "), None)
        return httpx.Response(204)

    def me(self, _request: httpx.Request, user: str) -> httpx.Response:
        return _json(200, self._view(user))

    def create_token(self, request: httpx.Request, user: str) -> httpx.Response:
        label = msgspec.json.decode(request.content).get("label", "")
        token_id = f"tok{len(self.api_tokens) + 1}"
        secret = f"cvops_secret_{token_id}"
        self.api_tokens.append(
            {"id": token_id, "token": secret, "label": label, "owner": user, "revoked": False}
        )
        return _json(201, TokenCreated(token_id=token_id, token=secret, label=label))

    def list_tokens(self, _request: httpx.Request, user: str) -> httpx.Response:
        return _json(
            200,
            [
                TokenView(token_id=t["id"], label=t["label"], created_at=T0, revoked=t["revoked"])
                for t in self.api_tokens
                if t["owner"] == user
            ],
        )

    def revoke_token(self, _request: httpx.Request, user: str, token_id: str) -> httpx.Response:
        for t in self.api_tokens:
            if t["id"] == token_id and t["owner"] == user:
                t["revoked"] = True
                return httpx.Response(204)
        return _error(404, "not_found", f"no token {token_id}")

    def create_user(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._admin_only(user):
            return refused
        body = msgspec.json.decode(request.content)
        if body["username"] in self.users:
            return _error(409, "conflict", f"user {body['username']} exists")
        self.users[body["username"]] = {
            "password": body["password"],
            "role": body.get("role", "viewer"),
            "disabled": False,
        }
        return _json(201, self._view(body["username"]))

    def list_users(self, _request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._admin_only(user):
            return refused
        return _json(200, [self._view(name) for name in sorted(self.users)])

    def show_user(self, _request: httpx.Request, user: str, username: str) -> httpx.Response:
        if refused := self._admin_only(user):
            return refused
        if username not in self.users:
            return _error(404, "not_found", f"no user {username}")
        return _json(200, self._view(username))

    def update_user(self, request: httpx.Request, user: str, username: str) -> httpx.Response:
        if refused := self._admin_only(user):
            return refused
        if username not in self.users:
            return _error(404, "not_found", f"no user {username}")
        self.users[username].update(msgspec.json.decode(request.content))
        return _json(200, self._view(username))

    # -- uploads ------------------------------------------------------------------------

    def upload(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._writer(user):  # the body was sent all the same
            return refused
        response = self._upload(request, user)
        if response.status_code in (201, 202, 422) and b"upload_id" in response.content:
            result = msgspec.json.decode(response.content, type=UploadResult)
            self.results[result.upload_id] = result
        return response

    def show_upload(self, _request: httpx.Request, _user: str, upload_id: str) -> httpx.Response:
        if upload_id not in self.results:
            return _error(404, "not_found", f"no upload {upload_id}")
        return _json(200, self.results[upload_id])

    def _upload(self, request: httpx.Request, user: str) -> httpx.Response:
        fields, filename, content = _parse_multipart(request)
        kind: Literal["model", "dataset"] = "model" if request.url.path == "/models" else "dataset"
        self.uploads.append(Upload(request.url.path, fields, filename, content))
        name = fields.get("name", "")
        if not name:
            return _error(422, "validation_error", "field 'name' is required")
        cid = f"corr-{len(self.uploads)}"
        header = {"X-Correlation-Id": cid}
        if "bad" in filename:
            result = UploadResult(
                upload_id=f"up{len(self.uploads)}",
                kind=kind,
                name=name,
                status="rejected",
                reason="not a safe model format: pickle",
                correlation_id=cid,
            )
            return _json(422, result, **header)
        if "slow" in filename:
            result = UploadResult(
                upload_id=f"up{len(self.uploads)}",
                kind=kind,
                name=name,
                status="pending",
                correlation_id=cid,
            )
            return _json(202, result, **header)
        if kind == "model":
            version = self._add_version(name, user, fields, filename, len(content))
        else:
            version = self._add_dataset(name, user, fields, filename, len(content))
        result = UploadResult(
            upload_id=f"up{len(self.uploads)}",
            kind=kind,
            name=name,
            status="validated",
            version=version,
            correlation_id=cid,
        )
        return _json(201, result, **header)

    def _add_version(
        self, name: str, user: str, fields: dict[str, str], filename: str, size: int
    ) -> int:
        versions = self.models.setdefault(name, [])
        shape = [int(x) for x in fields.get("input_shape", "3,32,32").split(",")]
        versions.append(
            ModelVersionView(
                model_name=name,
                version=len(versions) + 1,
                stage="none",
                format="onnx",
                artifact=ArtifactRef(sha256="ab" * 32, size=size, filename=filename),
                inputs=[TensorSpec(name="input", shape=[-1, *shape], dtype="float32")],
                outputs=[TensorSpec(name="logits", shape=[-1, 10], dtype="float32")],
                parameter_count=1_234_567,
                opset=18,
                architecture=fields.get("architecture"),
                num_classes=int(fields["num_classes"]) if "num_classes" in fields else None,
                description=fields.get("description", ""),
                created_at=T0,
                created_by=user,
            )
        )
        return len(versions)

    def _add_dataset(
        self, name: str, user: str, fields: dict[str, str], filename: str, size: int
    ) -> int:
        previous = self.datasets.get(name)
        version = 1 if previous is None else previous.version + 1
        ref = ArtifactRef(sha256="cd" * 32, size=size, filename=filename)
        self.datasets[name] = DatasetView(
            name=name,
            owner=user,
            version=version,
            created_at=T0,
            classes=["circle", "square"],
            class_counts=[60, 40],
            num_images=100,
            images=ImageStats(min_hw=[32, 32], max_hw=[32, 32], modal_hw=[32, 32], channels=3),
            splits=SplitCounts(train=70, val=15, test=15, calibration=10),
            source=ref,
            canonical=ref,
            seed=int(fields.get("seed", "0")),
            description=fields.get("description", ""),
        )
        return version

    # -- reads --------------------------------------------------------------------------

    def _model(self, name: str) -> ModelView:
        versions = self.models[name]
        return ModelView(
            name=name,
            owner=versions[0].created_by,
            created_at=T0,
            latest_version=len(versions),
            versions=list(versions),
        )

    def list_models(self, _request: httpx.Request, _user: str) -> httpx.Response:
        return _json(
            200, [msgspec.structs.replace(self._model(n), versions=[]) for n in self.models]
        )

    def show_model(self, _request: httpx.Request, _user: str, name: str) -> httpx.Response:
        if name not in self.models:
            return _error(404, "not_found", f"no model {name}")
        return _json(200, self._model(name))

    def list_versions(self, _request: httpx.Request, _user: str, name: str) -> httpx.Response:
        if name not in self.models:
            return _error(404, "not_found", f"no model {name}")
        return _json(200, self.models[name])

    def _version(self, name: str, v: str) -> ModelVersionView | None:
        versions = self.models.get(name, [])
        return versions[int(v) - 1] if 0 < int(v) <= len(versions) else None

    def show_version(
        self, _request: httpx.Request, _user: str, name: str, v: str
    ) -> httpx.Response:
        found = self._version(name, v)
        if found is None:
            return _error(404, "not_found", f"no version {name}:{v}")
        return _json(200, found)

    def stage(self, request: httpx.Request, user: str, name: str, v: str) -> httpx.Response:
        if self.users[user]["role"] == "viewer":
            return _error(403, "forbidden", "role viewer may not change stages")
        found = self._version(name, v)
        if found is None:
            return _error(404, "not_found", f"no version {name}:{v}")
        changed = msgspec.structs.replace(
            found, stage=msgspec.json.decode(request.content)["stage"]
        )
        self.models[name][int(v) - 1] = changed
        return _json(200, changed)

    def artifact_(self, _request: httpx.Request, _user: str, name: str, v: str) -> httpx.Response:
        if self._version(name, v) is None:
            return _error(404, "not_found", f"no version {name}:{v}")
        return httpx.Response(
            200,
            content=self.artifact,
            headers={
                "content-type": "application/octet-stream",
                "content-disposition": f'attachment; filename="{name}-v{v}.onnx"',
            },
        )

    def list_datasets(self, _request: httpx.Request, _user: str) -> httpx.Response:
        return _json(200, list(self.datasets.values()))

    def show_dataset(self, _request: httpx.Request, _user: str, name: str) -> httpx.Response:
        if name not in self.datasets:
            return _error(404, "not_found", f"no dataset {name}")
        return _json(200, self.datasets[name])

    def event_feed(self, request: httpx.Request, _user: str, cid: str) -> httpx.Response:
        if cid not in self.events:
            return _error(404, "not_found", f"no events for {cid}")
        body = self.events[cid]
        last = request.headers.get("last-event-id")
        if last is not None:  # resume: only the messages after that stream sequence
            blocks = [b for b in body.split("\n\n") if b.strip()]
            body = sse(*(b for b in blocks if _message_id(b) > int(last)))
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )

    def health(self, _request: httpx.Request, _user: None) -> httpx.Response:
        return _json(200, {"status": "ok", "checks": {"nats": "ok", "projection_lag": 0}})

    def add_model(self, name: str, versions: int = 1) -> None:
        """Registered versions of ``name`` (what deploy, convert and bench refer to)."""
        for _ in range(versions):
            self._add_version(name, "admin", {}, f"{name}.onnx", 1000)

    # -- jobs, deployments, conversions, benchmarks --------------------------------------
    # The services' answers are scripted (cvops.testing.client_fakes): the feed of a request is
    # its whole story at once, and the read shows where that story ends.

    def _writer(self, user: str) -> httpx.Response | None:
        if self.users[user]["role"] == "viewer":
            return _error(403, "forbidden", "role 'viewer' may not do this")
        return None

    def _new_id(self, kind: str) -> tuple[str, str]:
        n = len(self.requests)
        return f"{kind}-{n}", f"corr-{kind}-{n}"

    def create_job(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        body = msgspec.json.decode(request.content, type=CreateJob)
        if body.arch not in ARCHITECTURES:
            known = ", ".join(ARCHITECTURES)
            why = f"unknown architecture {body.arch!r}; architectures: {known}"
            return _error(422, "invalid", why)
        if body.dataset not in self.datasets:
            return _error(422, "invalid", f"unknown data set {body.dataset!r}")
        if body.budget.trials == 0:
            return _error(422, "invalid", "budget trials must be at least 1, got 0")
        job_id, cid = self._new_id("job")
        story = fake_services.training(
            body, job_id=job_id, correlation_id=cid, user=user, outcome=self.job_outcome
        )
        self.events[cid] = story.sse
        self.jobs[job_id] = story.view
        return _json(
            201,
            JobCreated(job_id=job_id, kind="training", correlation_id=cid),
            **{"X-Correlation-Id": cid},
        )

    def list_jobs(self, request: httpx.Request, _user: str) -> httpx.Response:
        status = request.url.params.get("status")
        found = [j for j in self.jobs.values() if status is None or j.status == status]
        summaries = [
            msgspec.convert(msgspec.structs.asdict(j), JobSummary, from_attributes=True)
            for j in found
        ]
        return _json(200, summaries)

    def show_job(self, _request: httpx.Request, _user: str, job_id: str) -> httpx.Response:
        if job_id not in self.jobs:
            return _error(404, "not_found", f"no job {job_id!r}")
        return _json(200, self.jobs[job_id])

    def cancel_job(self, _request: httpx.Request, user: str, job_id: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", f"no job {job_id!r}")
        if job.status in ("completed", "failed", "cancelled"):
            return _error(409, "conflict", f"job {job_id} has already {job.status}")
        job.cancel_requested = True
        return _json(202, job)

    def deploy(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        body = msgspec.json.decode(request.content, type=CreateDeployment)
        if self._version(body.model_name, str(body.version)) is None:
            return _error(
                404, "not_found", f"model {body.model_name!r} has no version {body.version}"
            )
        _, cid = self._new_id("deploy")
        story = fake_services.deployment(
            body, correlation_id=cid, user=user, outcome=self.deploy_outcome
        )
        self.events[cid] = story.sse
        self.deployments[story.view.deployment] = story.view
        requested = msgspec.structs.replace(story.view, status="requested", serving_version=None)
        return _json(202, requested, **{"X-Correlation-Id": cid})

    def list_deployments(self, _request: httpx.Request, _user: str) -> httpx.Response:
        return _json(200, sorted(self.deployments.values(), key=lambda d: d.deployment))

    def show_deployment(self, _request: httpx.Request, _user: str, name: str) -> httpx.Response:
        if name not in self.deployments:
            return _error(404, "not_found", f"no deployment {name!r}")
        return _json(200, self.deployments[name])

    def retire(self, _request: httpx.Request, user: str, name: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        current = self.deployments.get(name)
        if current is None:
            return _error(404, "not_found", f"no deployment {name!r}")
        if current.status == "retired":
            return _error(409, "conflict", f"deployment {name} is retired already")
        _, cid = self._new_id("retire")
        story = fake_services.retirement(current, correlation_id=cid, user=user)
        self.events[cid] = story.sse
        self.deployments[name] = story.view
        retiring = msgspec.structs.replace(story.view, status="retiring")
        return _json(202, retiring, **{"X-Correlation-Id": cid})

    def convert(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        body = msgspec.json.decode(request.content, type=CreateConversion)
        found = self._version(body.model_name, str(body.version))
        if found is None:
            return _error(
                404, "not_found", f"model {body.model_name!r} has no version {body.version}"
            )
        if not (body.dataset or found.lineage.dataset):
            return _error(
                422,
                "invalid",
                f"model {body.model_name}:{body.version} has no data set in its lineage: "
                "name one (dataset; cvops convert --dataset NAME)",
            )
        job_id, cid = self._new_id("conv")
        story = fake_services.conversion(
            body, job_id=job_id, correlation_id=cid, user=user, outcome=self.conversion_outcome
        )
        self.events[cid] = story.sse
        self.conversions[job_id] = story.view
        produced = self.engines.setdefault((body.model_name, body.version), [])
        produced.extend(story.engines)
        return _json(
            201,
            JobCreated(job_id=job_id, kind="conversion", correlation_id=cid),
            **{"X-Correlation-Id": cid},
        )

    def show_conversion(self, _request: httpx.Request, _user: str, job_id: str) -> httpx.Response:
        if job_id not in self.conversions:
            return _error(404, "not_found", f"no conversion {job_id!r}")
        return _json(200, self.conversions[job_id])

    def engines_(self, _request: httpx.Request, _user: str, name: str, v: str) -> httpx.Response:
        if self._version(name, v) is None:
            return _error(404, "not_found", f"model {name!r} has no version {v}")
        return _json(200, self.engines.get((name, int(v)), []))

    def benchmark(self, request: httpx.Request, user: str) -> httpx.Response:
        if refused := self._writer(user):
            return refused
        body = msgspec.json.decode(request.content, type=CreateBenchmark)
        if self._version(body.model_name, str(body.version)) is None:
            return _error(
                404, "not_found", f"model {body.model_name!r} has no version {body.version}"
            )
        job_id, cid = self._new_id("bench")
        story = fake_services.benchmark(
            body, job_id=job_id, correlation_id=cid, user=user, outcome=self.benchmark_outcome
        )
        self.events[cid] = story.sse
        self.benchmarks[job_id] = story.view
        return _json(
            201,
            JobCreated(job_id=job_id, kind="benchmark", correlation_id=cid),
            **{"X-Correlation-Id": cid},
        )

    def show_benchmark(self, _request: httpx.Request, _user: str, job_id: str) -> httpx.Response:
        if job_id not in self.benchmarks:
            return _error(404, "not_found", f"no benchmark {job_id!r}")
        return _json(200, self.benchmarks[job_id])

    # -- reports ------------------------------------------------------------------------

    def add_report(self, name: str, version: int = 1) -> fake_services.ReportStory:
        """The reporter's report of ``name:version`` (scripted: cvops.testing.client_fakes)."""
        story = self.reports[(name, version)] = fake_services.report(name, version)
        return story

    def report(self, _request: httpx.Request, _user: str, name: str, v: str) -> httpx.Response:
        story = self.reports.get((name, int(v)))
        if story is None:
            return _error(404, "not_found", f"no report yet for {name}:{v}")
        return _json(200, story.view)

    def report_file(
        self, request: httpx.Request, user: str, name: str, v: str, file: str
    ) -> httpx.Response:
        story = self.reports.get((name, int(v)))
        if story is None:
            return _error(404, "not_found", f"no report yet for {name}:{v}")
        content = story.files.get(request.url.path)
        if content is None:
            return _error(404, "not_found", f"the report of {name}:{v} has no {file}")
        media_types = {".html": "text/html; charset=utf-8", ".pdf": "application/pdf"}
        media_type = media_types.get(
            file, "image/png" if file.endswith(".png") else "application/json"
        )
        return httpx.Response(
            200,
            content=content,
            headers={"content-type": media_type, "content-length": str(len(content))},
        )

    def token_for(self, username: str) -> str:
        token = f"session-{username}-{len(self.sessions)}"
        self.sessions[token] = username
        return token


def _parse_multipart(request: httpx.Request) -> tuple[dict[str, str], str, bytes]:
    body = request.read()
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    filename, content = "", b""
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = str(part.get_param("name", header="content-disposition"))
        payload = bytes(part.get_payload(decode=True))
        if part.get_filename():
            filename, content = str(part.get_filename()), payload
        else:
            fields[name] = payload.decode()
    return fields, filename, content


def _message_id(block: str) -> int:
    for line in block.splitlines():
        if line.startswith("id:"):
            return int(line.removeprefix("id:").strip())
    return 0


def sse(*blocks: str) -> str:
    """An event-stream body from message blocks (each ends with a blank line)."""
    return "".join(block + "\n\n" for block in blocks)
