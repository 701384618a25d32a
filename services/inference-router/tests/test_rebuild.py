"""`cvops projections rebuild inference-router`: the entry point, the file, a real replay."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cvops.client import rebuild
from cvops.client.cli import cli
from cvops.contracts import ArtifactRef, Lineage, TensorSpec
from cvops.contracts.conversion import ConversionFailed
from cvops.contracts.registry import ModelVersionAdded
from cvops.core import Bus, ProjectionRunner, Settings, dump_rows, sqlite_engine
from cvops.inference_router import identity
from cvops.inference_router import projection as router_projection
from cvops.inference_router.projection import SUBJECTS, RouterProjection, db_path
from cvops.testing.router import ensure_user, issue_token, request_deployment, stamp

SERVICE = "inference-router"


def _rebuild(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *extra: str, service: str = SERVICE
) -> Result:
    monkeypatch.setenv("CVOPS_NATS_URL", settings.nats_url)
    monkeypatch.setenv("CVOPS_HOME", settings.home)
    return CliRunner().invoke(cli, ["projections", "rebuild", service, *extra])


def test_the_entry_point_names_the_file_the_router_keeps(settings: Settings) -> None:
    module = rebuild.load_projection(SERVICE)
    assert module is router_projection
    assert isinstance(module.projection, RouterProjection)
    assert module.projection.name == SERVICE
    # the file app.Router follows (it calls the same db_path) and the README names
    assert module.db_path(settings) == Path(settings.home) / SERVICE / "router.sqlite"


async def _publish_and_follow(settings: Settings, tag: str) -> None:
    """Events the router folds, then its projection as the live router keeps it."""
    bus = await Bus.connect(settings, name="test-router-rebuild")
    try:
        await ensure_user(bus, f"ann-{tag}", role="engineer")
        await issue_token(bus, f"ann-{tag}", f"secret-{tag}")
        spec = TensorSpec(name="input", shape=[-1, 3, 32, 32], dtype="float32")
        await bus.publish(
            ModelVersionAdded(
                **stamp("registry").envelope(f"version/{tag}"),
                model_name=f"m-{tag}",
                version=1,
                upload_id=uuid.uuid4().hex,
                artifact=ArtifactRef(sha256="ab" * 32, size=10, filename="m.onnx"),
                format="onnx",
                inputs=[spec],
                outputs=[TensorSpec(name="logits", shape=[-1, 10], dtype="float32")],
                parameter_count=0,
                lineage=Lineage(),
            )
        )
        await request_deployment(bus, f"dep-{tag}", f"m-{tag}", 1)
        runners = [
            ProjectionRunner(bus, RouterProjection(), db_path(settings), subjects=SUBJECTS),
            ProjectionRunner(
                bus,
                identity.projection,
                identity.db_path(settings),
                stream=identity.STREAM,
            ),
        ]
        tasks = [asyncio.create_task(runner.run()) for runner in runners]
        try:
            for runner in runners:
                assert await runner.catch_up()
        finally:
            for runner in runners:
                runner.stop()
            await asyncio.gather(*tasks)
            for runner in runners:
                runner.engine.dispose()
        # an event the router does not fold, last in the log
        await bus.publish(
            ConversionFailed(
                **stamp("converter").envelope(f"failed/{tag}"),
                job_id=f"conv-{tag}",
                model_name=f"m-{tag}",
                version=1,
                reason="not the router's",
            )
        )
    finally:
        await bus.close()


def test_rebuild_replays_the_log_into_the_routers_projection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    asyncio.run(_publish_and_follow(settings, tag))
    db = db_path(settings)
    engine = sqlite_engine(db)
    live = dump_rows(engine, router_projection.metadata)
    engine.dispose()
    live_checkpoint = ProjectionRunner(None, RouterProjection(), db).checkpoint()
    identity_db = identity.db_path(settings)
    engine = sqlite_engine(identity_db)
    live_identity = dump_rows(engine, identity.metadata)
    engine.dispose()

    result = _rebuild(settings, monkeypatch)
    identity_result = _rebuild(settings, monkeypatch, service=f"{SERVICE}-identity")

    assert result.exit_code == 0, result.output
    assert f"rebuilt {SERVICE} projection {db}: " in result.stdout
    assert identity_result.exit_code == 0, identity_result.output
    engine = sqlite_engine(db)
    assert dump_rows(engine, router_projection.metadata) == live
    runner = ProjectionRunner(None, RouterProjection(), db)
    # replayed through the router's own filter: it stops where the live projection did
    assert runner.checkpoint() == live_checkpoint
    with runner.session() as s:
        assert router_projection.model_version(s, f"m-{tag}", 1) is not None
        dep = router_projection.deployment(s, f"dep-{tag}")
        assert dep is not None and dep.status == "pending" and dep.pending_version == 1
    runner.engine.dispose()
    engine.dispose()
    engine = sqlite_engine(identity_db)
    assert dump_rows(engine, identity.metadata) == live_identity
    engine.dispose()
    # identity's own stream and file: users and token digests
    runner = ProjectionRunner(None, identity.projection, identity_db)
    with runner.session() as s:
        user = identity.user(s, f"ann-{tag}")
        assert user is not None and user.role == "engineer"
        tokens = identity.all_tokens(s)
        assert any(token.username == f"ann-{tag}" for token, _ in tokens)
    runner.engine.dispose()


def test_rebuild_refuses_while_the_router_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = Path(settings.home) / "run" / f"{SERVICE}.pid"  # where `./justw up` writes it
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))
    refused = _rebuild(settings, monkeypatch)
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"error: service_running: {SERVICE} is running (pid ")
    assert not db_path(settings).exists()
