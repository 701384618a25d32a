"""The bus: one JetStream stream of events, an object store, a KV bucket; publish and pull."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from cvops.contracts import SECRET_PREFIX, SUBJECT_PREFIX, Event, UnknownEvent, decode, encode
from cvops.core import metrics
from cvops.core.logging import get_logger
from cvops.core.settings import Settings
from cvops.domain.checks import check_storable

STREAM = "CVOPS_EVENTS"
# identity's events carry password and token hashes: their own stream, which only the
# services that hold identity may read (NATS permissions, ``cvops.core.nats_auth``)
IDENTITY_STREAM = "CVOPS_IDENTITY"
ARTIFACT_BUCKET = "cvops-artifacts"
LEASE_BUCKET = "cvops-leases"
# each service instance's status (``cvops.core.presence``); a key lives this long unrenewed
PRESENCE_BUCKET = "cvops-services"
PRESENCE_TTL_S = 30.0
ALL_EVENTS = f"{SUBJECT_PREFIX}.>"
ALL_SECRETS = f"{SECRET_PREFIX}.>"
# stream -> the subjects it holds
STREAMS = {STREAM: ALL_EVENTS, IDENTITY_STREAM: ALL_SECRETS}


def stream_of(subject: str) -> str:
    """The stream that holds events on ``subject`` (a subject or a filter)."""
    return IDENTITY_STREAM if subject.startswith(f"{SECRET_PREFIX}.") else STREAM


log = get_logger(__name__)


class ShuttingDown(Exception):
    """A work handler stopped because its service is stopping: the message goes back to the
    stream for another instance (or this one after a restart). Not a failure."""


class ConcurrencyConflict(Exception):
    """The aggregate moved on since we read it (expected-last-subject-sequence failed)."""


@dataclass(frozen=True)
class Published:
    seq: int
    duplicate: bool


class Bus:
    """A NATS connection with the cvops stream, object store and KV ensured."""

    def __init__(self, nc: Client, js: JetStreamContext, settings: Settings) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings, *, name: str = "cvops", user: str = "") -> Bus:
        """Connect (reconnecting forever when the server restarts) and ensure the streams.

        The NATS user is ``settings.nats_user``; without one, on the embedded server, the
        password of ``user`` (default: ``name``, the service) comes from the home's users
        file that the launcher wrote.
        """
        # CVOPS_NATS_URL may list a cluster: "nats://n1:4250,nats://n2:4250,..."
        servers = [u.strip() for u in settings.effective_nats_url.split(",") if u.strip()]
        credentials = connect_credentials(settings, user or name)
        nc = await nats.connect(
            servers,
            name=name,
            **credentials,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            error_cb=_log_error,
            disconnected_cb=_log_disconnect,
        )
        bus = cls(nc, nc.jetstream(timeout=10), settings)
        await bus.ensure()
        return bus

    async def ensure(self) -> None:
        """Create the streams, object store and KV bucket when missing (idempotent)."""
        for stream, subjects in STREAMS.items():
            config = StreamConfig(
                name=stream,
                subjects=[subjects],
                storage=StorageType.FILE,
                num_replicas=self.settings.stream_replicas,
                duplicate_window=self.settings.duplicate_window_s,
                deny_delete=True,
                deny_purge=True,
                allow_rollup_hdrs=False,
            )
            try:
                await self.js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(config)
        try:
            self.artifacts_store = await self.js.object_store(ARTIFACT_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self.artifacts_store = await self.js.create_object_store(
                ARTIFACT_BUCKET,
                config=ObjectStoreConfig(
                    bucket=ARTIFACT_BUCKET,
                    storage=StorageType.FILE,
                    replicas=self.settings.stream_replicas,
                ),
            )
        self.leases = await self._key_value(LEASE_BUCKET)
        self.presence = await self._key_value(PRESENCE_BUCKET, ttl=PRESENCE_TTL_S)

    async def _key_value(self, bucket: str, ttl: float | None = None) -> KeyValue:
        """A KV bucket (one value a key, on disk, the streams' replicas), made if missing."""
        try:
            return await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    storage=StorageType.FILE,
                    replicas=self.settings.stream_replicas,
                    history=1,
                    ttl=ttl,
                )
            )

    async def publish(
        self, event: Event, *, expected_last_subject_seq: int | None = None
    ) -> Published:
        """Append one event; ``Nats-Msg-Id`` = event_id so a re-publish is dropped.

        With ``expected_last_subject_seq`` the append succeeds only if the aggregate's
        last event is still at that sequence (0: the aggregate has no event yet).

        An event with an integer that no projection can store (beyond 64 bits) raises
        ``cvops.domain.errors.Invalid`` and is not appended: once in the immutable log it
        would stop every projection that reads it.
        """
        check_storable(event)
        headers = {"Nats-Msg-Id": str(event.event_id)}
        if expected_last_subject_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_seq)
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = event.aggregate_subjects
        try:
            subject = event.subject
            ack = await self.js.publish(
                subject, encode(event), headers=headers, stream=stream_of(subject)
            )
        except nats.js.errors.APIError as err:
            if err.err_code == 10071:  # wrong last sequence
                raise ConcurrencyConflict(str(err)) from err
            raise
        if not ack.duplicate:
            metrics.job_ended(event)
        return Published(seq=ack.seq, duplicate=bool(ack.duplicate))

    async def last_seq(self, stream: str = STREAM) -> int:
        """Sequence of the newest event of ``stream`` (the events' by default)."""
        info = await self.js.stream_info(stream)
        return int(info.state.last_seq)

    async def last_subject_seq(self, subject_filter: str) -> int:
        """Sequence of the newest event matching ``subject_filter`` (0 when none), in the
        stream that holds those subjects."""
        try:
            msg = await self.js.get_last_msg(stream_of(subject_filter), subject_filter)
        except nats.js.errors.NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


def connect_credentials(settings: Settings, user: str) -> dict[str, str]:
    """``nats.connect``'s user and password for ``user`` (empty: connect without)."""
    if settings.nats_user:
        return {"user": settings.nats_user, "password": settings.nats_password}
    if settings.nats_url:  # an external server: its users come from the environment
        return {}
    from cvops.core.nats_auth import credentials  # (imports this module)

    found = credentials(settings.home_path, user)
    return {} if found is None else {"user": found[0], "password": found[1]}


async def _log_error(err: Exception) -> None:
    log.warning("nats_error", error=str(err))


async def _log_disconnect() -> None:
    log.warning("nats_disconnected")


Handler = Callable[[Event, Msg], Awaitable[None]]


class WorkConsumer:
    """A durable pull consumer shared by every instance of a service (scale out = start more).

    Long handlers get ``in_progress()`` heartbeats; success acks, an exception naks with a
    delay (the job is redelivered); unknown event types are acked and skipped.
    """

    def __init__(
        self,
        bus: Bus,
        durable: str,
        subjects: list[str],
        handler: Handler,
        *,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        nak_delay: float = 1.0,
    ) -> None:
        self.bus = bus
        self.durable = durable
        self.subjects = subjects
        self.handler = handler
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.nak_delay = nak_delay
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subjects=self.subjects,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=1000,
        )
        return await self.bus.js.pull_subscribe(
            "", durable=self.durable, stream=stream_of(self.subjects[0]), config=config
        )

    async def run(self) -> None:
        """Fetch and handle one message at a time until ``stop()``."""
        metrics.consumers[self.durable] = self
        try:
            await self._run()
        finally:
            if metrics.consumers.get(self.durable) is self:
                del metrics.consumers[self.durable]

    async def _run(self) -> None:
        sub = None
        while not self._stopping.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe()
                msgs = await sub.fetch(1, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (
                nats.js.errors.NotFoundError,
                nats.js.errors.ServiceUnavailableError,
                nats.errors.ConnectionClosedError,
                nats.errors.NoRespondersError,
                nats.js.errors.APIError,
                nats.errors.Error,
            ) as err:
                log.warning("work_consumer_retry", durable=self.durable, error=str(err))
                sub = None
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._handle(msg)
        if sub is not None:
            # a fetch reply that lands after the last fetch timed out would sit in this
            # subscription's queue and make Bus.close()'s drain wait out its whole timeout
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        try:
            event = decode(msg.data)
        except Exception as err:
            metrics.EVENTS_FAILED.labels(self.durable, "undecodable").inc()
            # a poison message (a known type with fields no reader can decode) would raise
            # on every delivery; raised here it ended run() and with it all of this
            # service's work, silently. Say so and never deliver it again.
            log.error(
                "work_undecodable",
                durable=self.durable,
                seq=meta.sequence.stream,
                subject=msg.subject,
                error=f"{type(err).__name__}: {err}"[:1000],
            )
            with contextlib.suppress(Exception):
                await msg.term()
            return
        if isinstance(event, UnknownEvent):
            await msg.ack()
            return
        bound = log.bind(
            event_type=event.tag(),
            seq=meta.sequence.stream,
            correlation_id=event.correlation_id,
            durable=self.durable,
            delivered=meta.num_delivered,
        )
        beat = asyncio.create_task(self._heartbeat(msg))
        started = time.perf_counter()
        try:
            with metrics.handling(event):
                await self.handler(event, msg)
        except ShuttingDown:
            bound.info("work_interrupted")
            beat.cancel()
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        except Exception as err:  # the job is redelivered; the error is logged, not lost
            bound.exception("work_failed", error=str(err))
            metrics.EVENTS_FAILED.labels(self.durable, event.tag()).inc()
            metrics.HANDLER_SECONDS.labels(self.durable).observe(time.perf_counter() - started)
            beat.cancel()
            try:
                await msg.nak(delay=self.nak_delay)
            except Exception:
                pass
            return
        finally:
            beat.cancel()
        metrics.EVENTS_HANDLED.labels(self.durable, event.tag()).inc()
        metrics.HANDLER_SECONDS.labels(self.durable).observe(time.perf_counter() - started)
        try:
            await msg.ack_sync(timeout=5)
        except Exception as err:
            bound.warning("ack_failed", error=str(err))
        bound.info("work_done")

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(max(self.ack_wait / 3, 0.5))
            try:
                await msg.in_progress()
            except Exception:
                return
