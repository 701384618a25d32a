"""gRPC front door: Triton's ``inference.GRPCInferenceService`` proxied as bytes.

A generic handler receives each call's serialized message; only the leading string fields
(model name, version, request id) are read off the wire, the version is rewritten when the
router chose it (canary), and the bytes go to the chosen Triton's gRPC port unchanged.
Tensors are never parsed. Status codes follow Triton's: NOT_FOUND for an unknown model,
UNAUTHENTICATED without a valid token (every per-model method, for any name that is not a
public deployment), UNAVAILABLE (retryable) while no Triton serves it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from cvops.inference_router.proxy import Proxy, RouteError
from cvops.inference_router.routing import Instance

SERVICE = "inference.GRPCInferenceService"
MAX_MESSAGE = 512 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
INFER_TIMEOUT_S = 120.0
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE,)


# -- protobuf wire format (just enough to read and rewrite leading fields) ----------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def scan(buf: bytes, wanted: tuple[int, ...] = (1, 2, 3)) -> dict[int, tuple[int, int, int]]:
    """Top-level length-delimited fields in ``wanted``: number -> (field start, value
    start, end). Other fields are skipped without copying."""
    found: dict[int, tuple[int, int, int]] = {}
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if number in wanted:
                found[number] = (start, pos, pos + length)
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return found


def string_field(buf: bytes, fields: dict[int, tuple[int, int, int]], number: int) -> str:
    span = fields.get(number)
    return "" if span is None else buf[span[1] : span[2]].decode()


def field_bytes(number: int, value: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def with_version(buf: bytes, fields: dict[int, tuple[int, int, int]], version: str) -> bytes:
    """``buf`` with field 2 (model_version) set to ``version`` (one copy of the tail)."""
    span = fields.get(2)
    new = field_bytes(2, version.encode())
    if span is not None:
        return b"".join((buf[: span[0]], new, buf[span[2] :]))
    name = fields.get(1)
    cut = name[2] if name is not None else 0
    return b"".join((buf[:cut], new, buf[cut:]))


# -- the service ------------------------------------------------------------------------

Unary = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class KServeGrpc(grpc.GenericRpcHandler):
    """Routes each ``GRPCInferenceService`` method; unknown methods are UNIMPLEMENTED."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.metrics = proxy.metrics
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        unary: dict[str, Unary] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_passthrough("ModelMetadata"),
            "ModelConfig": self.model_passthrough("ModelConfig"),
            "ModelStatistics": self.model_passthrough("ModelStatistics"),
            "ModelInfer": self.model_infer,
            "RepositoryIndex": self.repository_index,
            "RepositoryModelLoad": self.refuse_control,
            "RepositoryModelUnload": self.refuse_control,
        }
        self._handlers = {
            f"/{SERVICE}/{name}": grpc.unary_unary_rpc_method_handler(fn)
            for name, fn in unary.items()
        }
        self._handlers[f"/{SERVICE}/ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer
        )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    def _stub(self, inst: Instance, method: str) -> Any:
        key = (inst.grpc, method)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get(inst.grpc)
            if channel is None:
                channel = grpc.aio.insecure_channel(inst.grpc, options=CHANNEL_OPTIONS)
                self._channels[inst.grpc] = channel
            stub = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out
            self._stubs[key] = stub
        return stub

    async def _forward(
        self, model: str, version: int | None, method: str, request: bytes, timeout: float
    ) -> bytes:
        async def send(inst: Instance) -> bytes:
            return await self._stub(inst, method)(request, timeout=timeout)

        return await self.proxy.call(model, version, send, transient=_transient)

    # -- local answers ----------------------------------------------------------------
    async def server_live(self, _request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    async def server_ready(self, _request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        ready = self.proxy.pool.any_up()
        return service_pb2.ServerReadyResponse(ready=ready).SerializeToString()

    async def model_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        fields = scan(request, (1, 2))
        name, pinned = string_field(request, fields, 1), string_field(request, fields, 2)
        try:
            self.proxy.authorize(name, _authorization(context))
            self.proxy.resolve(name, pinned or None, None)
        except RouteError as err:
            if err.status == 401:
                await _abort(context, err)
            return service_pb2.ModelReadyResponse(ready=False).SerializeToString()
        ready = self.proxy.pool.serving(name, int(pinned) if pinned else None)
        return service_pb2.ModelReadyResponse(ready=ready).SerializeToString()

    async def repository_index(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            entries = self.proxy.index(_authorization(context))
        except RouteError as err:
            await _abort(context, err)
            raise AssertionError("unreachable") from err
        out = service_pb2.RepositoryIndexResponse()
        for e in entries:
            out.models.add(
                name=e.name,
                version=str(e.version),
                state="READY" if e.ready else "UNAVAILABLE",
                reason=e.reason,
            )
        return out.SerializeToString()

    async def refuse_control(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "models are loaded and unloaded by deployments (`cvops deploy`), not the router",
        )
        raise AssertionError("unreachable")

    # -- passed through ---------------------------------------------------------------
    async def server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        for inst in self.proxy.pool.instances:
            if not inst.up:
                continue
            try:
                return await self._stub(inst, "ServerMetadata")(request, timeout=5)
            except grpc.aio.AioRpcError:
                continue
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no Triton instance is up; retry")
        raise AssertionError("unreachable")

    def model_passthrough(self, method: str) -> Unary:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            fields = scan(request, (1, 2))
            name, pinned = string_field(request, fields, 1), string_field(request, fields, 2)
            try:
                self.proxy.authorize(name, _authorization(context))
                self.proxy.resolve(name, pinned or None, None)
                return await self._forward(
                    name, int(pinned) if pinned else None, method, request, 30
                )
            except RouteError as err:
                await _abort(context, err)
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details() or "")
            raise AssertionError("unreachable")

        return handle

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        start = time.perf_counter()
        version: int | str = "-"
        name = ""
        code = "OK"
        try:
            fields = scan(request)
            name = string_field(request, fields, 1)
            pinned = string_field(request, fields, 2)
            meta = dict(context.invocation_metadata() or ())
            key = meta.get("x-request-key") or string_field(request, fields, 3) or None
            self.proxy.authorize(name, meta.get("authorization"))
            _, v = self.proxy.resolve(name, pinned or None, key)
            version = v
            if pinned != str(v):
                request = with_version(request, fields, str(v))
            return await self._forward(name, v, "ModelInfer", request, INFER_TIMEOUT_S)
        except RouteError as err:
            code = _STATUS.get(err.status, grpc.StatusCode.INTERNAL).name
            await _abort(context, err)
        except grpc.aio.AioRpcError as err:
            code = err.code().name
            await context.abort(err.code(), err.details() or "")
        except (ValueError, IndexError, UnicodeDecodeError) as err:
            code = "INVALID_ARGUMENT"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {err}")
        finally:
            self.metrics.observe(name, version, "grpc", code, time.perf_counter() - start)
        raise AssertionError("unreachable")

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Each streamed request is routed on its own; errors come back in the stream."""
        meta = dict(context.invocation_metadata() or ())
        async for request in requests:
            try:
                fields = scan(request)
                name = string_field(request, fields, 1)
                pinned = string_field(request, fields, 2)
                key = meta.get("x-request-key") or string_field(request, fields, 3) or None
                self.proxy.authorize(name, meta.get("authorization"))
                _, v = self.proxy.resolve(name, pinned or None, key)
                if pinned != str(v):
                    request = with_version(request, fields, str(v))
                answer = await self._forward(name, v, "ModelInfer", request, INFER_TIMEOUT_S)
                yield field_bytes(2, answer)
            except RouteError as err:
                yield field_bytes(1, err.message.encode())
            except grpc.aio.AioRpcError as err:
                yield field_bytes(1, (err.details() or err.code().name).encode())
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                yield field_bytes(1, f"malformed request: {err}".encode())


def _transient(err: BaseException) -> bool:
    """A Triton that went away (or is not serving yet): worth one more try elsewhere."""
    return isinstance(err, grpc.aio.AioRpcError) and err.code() in _TRANSIENT


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``authorization`` metadata (``Bearer <token>``), if any."""
    return dict(context.invocation_metadata() or ()).get("authorization")


async def _abort(context: grpc.aio.ServicerContext, err: RouteError) -> None:
    code = _STATUS.get(err.status, grpc.StatusCode.INTERNAL)
    await context.abort(code, err.message)
