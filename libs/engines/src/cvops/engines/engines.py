"""Inference engines behind one interface, and the registry of what this host can run.

An engine is constructed cheaply, says whether its runtime is present (``available()``), then
``load``s an artifact (or a torch module), ``infer``s float32 NCHW batches and ``close``s. An
engine whose runtime is absent says why; it is never replaced by another one silently.
"""

from __future__ import annotations

import abc
import functools
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np

from cvops.engines.errors import EngineFailure, EngineUnavailable

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class Engine(abc.ABC):
    """One way to run a model: a runtime, a device and a precision."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # artifact formats load() accepts
    device: ClassVar[str] = "cpu"

    def __init__(self, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self._loaded = False

    @property
    def label(self) -> str:
        return f"{self.name}/{self.precision}"

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether this host can run the engine, and if not, why."""

    @abc.abstractmethod
    def load(self, source: Any) -> None:
        """Load an artifact path (or a torch module for torch engines)."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one float32 ``(N, C, H, W)`` batch; return float32 outputs ``(N, ...)``."""

    def close(self) -> None:
        """Release the runtime's resources; the engine may be loaded again afterwards."""
        self._loaded = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_available(self) -> None:
        ok, why = self.available()
        if not ok:
            raise EngineUnavailable(why)

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise EngineFailure(f"{self.label}: infer() before load()")


# ---------------------------------------------------------------------------------------------
# torch


def _torch_module(source: Any) -> Any:
    import torch

    if isinstance(source, torch.nn.Module):
        return source
    path = Path(source)
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    raise EngineFailure(
        f"torch engines load a torch.nn.Module or a torch.export .pt2 file, got {source!r}"
    )


class TorchEagerEngine(Engine):
    """The source model in plain PyTorch: the reference every conversion is compared with."""

    name = "torch-eager"
    formats = ("torch",)

    def __init__(self, precision: str = "fp32", device: str | None = None) -> None:
        super().__init__(precision)
        self.device_name = device
        self._model: Any = None
        self._dtype: Any = None
        self._device: Any = None

    def available(self) -> tuple[bool, str]:
        try:
            import torch
        except Exception as err:
            return False, f"{self.name}: torch not importable ({err})"
        device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            return False, f"{self.name}: no CUDA device"
        if self.precision == "int8":
            return False, f"{self.name}: int8 is not an eager precision"
        if self.precision == "fp16" and device == "cpu":
            return False, f"{self.name}: fp16 on CPU is not a serving path (use bf16 or a GPU)"
        return True, ""

    def load(self, source: Any) -> None:
        import torch

        self._require_available()
        self._device = torch.device(
            self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            self.precision
        ]
        module = _torch_module(source)
        self._model = self._prepare(module.eval().to(self._device, self._dtype))
        self._loaded = True

    def _prepare(self, module: Any) -> Any:
        return module

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self._require_loaded()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, self._dtype)
            y = self._model(x)
            return y.float().cpu().numpy()

    def close(self) -> None:
        self._model = None
        super().close()


class TorchCompiledEngine(TorchEagerEngine):
    """The source model through ``torch.compile`` (inductor); a shape compiles on first use."""

    name = "torch-compiled"

    def __init__(
        self, precision: str = "fp32", device: str | None = None, mode: str | None = None
    ) -> None:
        super().__init__(precision, device)
        self.mode = mode

    def available(self) -> tuple[bool, str]:
        ok, why = super().available()
        if not ok:
            return ok, why.replace(TorchEagerEngine.name, self.name)
        return _inductor_toolchain()

    def _prepare(self, module: Any) -> Any:
        import torch

        try:
            return torch.compile(module, mode=self.mode, dynamic=False)
        except Exception as err:
            raise EngineUnavailable(f"{self.name}: torch.compile failed: {err}") from err

    def infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            return super().infer(batch)
        except EngineFailure:
            raise
        except Exception as err:
            # Compilation happens on the first call of each shape; a missing toolchain shows here.
            if type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise EngineUnavailable(f"{self.name}: torch.compile failed: {err}") from err
            raise


@functools.cache
def _inductor_toolchain() -> tuple[bool, str]:
    """Inductor on CPU writes C++; without a compiler torch.compile cannot run."""
    try:
        import torch
    except Exception as err:
        return False, f"torch-compiled: torch not importable ({err})"
    if torch.cuda.is_available():
        return True, ""
    if not any(shutil.which(c) for c in _compiler_candidates()):
        return False, "torch-compiled: no C++ compiler on PATH (inductor needs one on CPU)"
    return True, ""


def _compiler_candidates() -> list[str]:
    """The C++ compilers inductor would try: its configured one, $CXX, then the usual names."""
    try:
        from torch._inductor import config

        configured = config.cpp.cxx[1] if isinstance(config.cpp.cxx, tuple) else None
    except Exception:
        configured = None
    names = (configured, os.environ.get("CXX"), "g++", "clang++", "c++")
    return list(dict.fromkeys(c for c in names if c))


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class _OrtEngine(Engine):
    formats = ("onnx",)
    provider: ClassVar[str]

    def __init__(
        self, precision: str = "fp32", threads: int | None = None, spinning: bool | None = None
    ) -> None:
        super().__init__(precision)
        self.threads = threads
        # ORT's worker threads spin between calls: best on a dedicated host, much worse on an
        # oversubscribed one (other services, other jobs). None keeps ORT's default (spin).
        self.spinning = spinning
        self._session: Any = None
        self._input = ""

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except Exception as err:
            return False, f"{self.name}: onnxruntime not importable ({err})"
        providers = ort.get_available_providers()
        if self.provider not in providers:
            have = ", ".join(providers)
            return False, f"{self.name}: {self.provider} not in onnxruntime providers ({have})"
        return True, ""

    def _providers(self) -> list[Any]:
        if self.provider == "CPUExecutionProvider":
            return [self.provider]
        return [self.provider, "CPUExecutionProvider"]

    def load(self, source: Any) -> None:
        import onnxruntime as ort

        self._require_available()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.spinning is not None:
            flag = "1" if self.spinning else "0"
            options.add_session_config_entry("session.intra_op.allow_spinning", flag)
            options.add_session_config_entry("session.inter_op.allow_spinning", flag)
        try:
            self._session = ort.InferenceSession(str(source), options, providers=self._providers())
        except Exception as err:
            raise EngineFailure(f"{self.name}: cannot load {source}: {err}") from err
        active = self._session.get_providers()
        if self.provider not in active:
            raise EngineUnavailable(
                f"{self.name}: {self.provider} refused the model (active: {', '.join(active)})"
            )
        self._input = self._session.get_inputs()[0].name
        self._loaded = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._require_loaded()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self._session.run(None, {self._input: x})[0], dtype=np.float32)

    def close(self) -> None:
        self._session = None
        super().close()


class OrtCpuEngine(_OrtEngine):
    """ONNX Runtime on the CPU execution provider."""

    name = "onnxruntime-cpu"
    provider = "CPUExecutionProvider"


class OrtCudaEngine(_OrtEngine):
    """ONNX Runtime on the CUDA execution provider."""

    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"
    device = "cuda"


class OrtTensorrtEngine(_OrtEngine):
    """ONNX Runtime on the TensorRT execution provider (FP16/INT8 per the artifact)."""

    name = "onnxruntime-tensorrt"
    provider = "TensorrtExecutionProvider"
    device = "cuda"

    def _providers(self) -> list[Any]:
        options = {
            "trt_fp16_enable": self.precision in ("fp16", "int8"),
            "trt_int8_enable": self.precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": os.environ.get("CVOPS_TRT_CACHE", ".cvops/trt-cache"),
        }
        return [(self.provider, options), "CUDAExecutionProvider", "CPUExecutionProvider"]


# ---------------------------------------------------------------------------------------------
# OpenVINO


class OpenVinoEngine(Engine):
    """OpenVINO on the CPU; loads IR (``.xml``) or ONNX directly."""

    name = "openvino-cpu"
    formats = ("openvino-ir", "onnx")

    def __init__(self, precision: str = "fp32", hint: str = "LATENCY") -> None:
        super().__init__(precision)
        self.hint = hint
        self._compiled: Any = None
        self._local = threading.local()

    def available(self) -> tuple[bool, str]:
        try:
            import openvino as ov
        except Exception as err:
            return False, f"{self.name}: openvino not importable ({err})"
        if "CPU" not in ov.Core().available_devices:
            return False, f"{self.name}: OpenVINO sees no CPU device"
        return True, ""

    def load(self, source: Any) -> None:
        import openvino as ov

        self._require_available()
        try:
            core = ov.Core()
            config = {
                "PERFORMANCE_HINT": self.hint,
                # the CPU plugin computes in bf16 by default where the CPU has it; fp32 means fp32
                "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            }
            self._compiled = core.compile_model(str(source), "CPU", config)
        except Exception as err:
            raise EngineFailure(f"{self.name}: cannot load {source}: {err}") from err
        self._local = threading.local()
        self._loaded = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._require_loaded()
        request = getattr(self._local, "request", None)
        if request is None:
            # An infer request is not thread-safe; each calling thread gets its own.
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.asarray(result[self._compiled.outputs[0]], dtype=np.float32)

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()
        super().close()


# ---------------------------------------------------------------------------------------------
# TensorRT (native)


class TensorRTEngine(Engine):
    """A serialized TensorRT engine (``.plan``) run with torch-owned CUDA buffers."""

    name = "tensorrt"
    formats = ("tensorrt-plan",)
    device = "cuda"

    def __init__(self, precision: str = "fp16") -> None:
        super().__init__(precision)
        self._engine: Any = None
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        from cvops.engines.convert import tensorrt_available

        return tensorrt_available()

    def load(self, source: Any) -> None:
        self._require_available()
        import tensorrt as trt

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(Path(source).read_bytes())
        if self._engine is None:
            raise EngineFailure(f"{self.name}: cannot deserialize {source}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == mode)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) != mode)
        self._loaded = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self._require_loaded()
        with self._lock:  # one execution context: calls are serialised
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
            self._context.set_input_shape(self._input, tuple(x.shape))
            shape = tuple(self._context.get_tensor_shape(self._output))
            y = torch.empty(shape, dtype=torch.float32, device="cuda")
            self._context.set_tensor_address(self._input, x.data_ptr())
            self._context.set_tensor_address(self._output, y.data_ptr())
            stream = torch.cuda.current_stream()
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise EngineFailure(f"{self.name}: execute_async_v3 failed")
            stream.synchronize()
            return y.cpu().numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
        super().close()


# ---------------------------------------------------------------------------------------------
# registry


class EngineStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One engine of the registry and whether this host can run it."""

    name: str
    device: str
    formats: list[str]
    available: bool
    detail: str


# Engine classes by name: exactly the contracts' ``ENGINE_NAMES`` (a test holds them equal).
ENGINE_REGISTRY: dict[str, type[Engine]] = {
    cls.name: cls
    for cls in (
        TorchEagerEngine,
        TorchCompiledEngine,
        OrtCpuEngine,
        OrtCudaEngine,
        OrtTensorrtEngine,
        OpenVinoEngine,
        TensorRTEngine,
    )
}


def create_engine(name: str, precision: str = "fp32", **options: Any) -> Engine:
    """An unloaded engine by registry name."""
    try:
        factory: Callable[..., Engine] = ENGINE_REGISTRY[name]
    except KeyError:
        raise EngineUnavailable(
            f"unknown engine {name!r}; known: {', '.join(sorted(ENGINE_REGISTRY))}"
        ) from None
    return factory(precision=precision, **options)


def available_engines() -> list[EngineStatus]:
    """Every registered engine with ``available`` or ``unavailable: <why>``."""
    statuses = []
    for name, cls in ENGINE_REGISTRY.items():
        engine = cls() if name != TensorRTEngine.name else cls(precision="fp16")
        try:
            ok, why = engine.available()
        except Exception as err:  # a broken runtime install is an answer, not a crash
            ok, why = False, f"{name}: {err}"
        statuses.append(
            EngineStatus(
                name=name,
                device=cls.device,
                formats=list(cls.formats),
                available=ok,
                detail="available" if ok else f"unavailable: {why}",
            )
        )
    return statuses
