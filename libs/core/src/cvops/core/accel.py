"""The host's compute devices: CPUs from /proc/cpuinfo, NVIDIA GPUs through NVML.

NVML comes from the optional ``nvidia-ml-py`` package (extra ``gpu`` of cvops-core); with
no package or no driver the GPU list is empty and everything runs on CPU. Nothing here
imports torch: versions of the inference runtimes come from package metadata.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from cvops.core.logging import get_logger

log = get_logger(__name__)

# instruction-set extensions that change which engine or precision is fastest on a CPU
NOTABLE_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)

RUNTIME_PACKAGES = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "nvidia-pytriton",
    "tritonclient",
)


class Cpu(msgspec.Struct, frozen=True, kw_only=True):
    """One CPU package (socket)."""

    index: int
    model: str
    logical_cores: int
    physical_cores: int
    flags: list[str] = []


class Gpu(msgspec.Struct, frozen=True, kw_only=True):
    """One NVIDIA GPU as NVML reports it (``index`` is NVML's, which ignores
    ``CUDA_VISIBLE_DEVICES``)."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    compute_capability: str
    pci_bus_id: str = ""
    driver_version: str = ""
    cuda_driver_version: str = ""


# -- CPUs ---------------------------------------------------------------------------


def parse_cpuinfo(text: str, machine: str = "") -> list[Cpu]:
    """CPU packages described by the text of /proc/cpuinfo (x86 and Arm layouts)."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    sockets: dict[int, dict[str, Any]] = {}
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if "processor" not in fields or not fields["processor"].isdigit():
            continue  # Arm puts "Hardware"/"Serial" blocks after the processors
        socket = int(fields.get("physical id", "0") or 0)
        s = sockets.setdefault(
            socket, {"model": "", "logical": 0, "cores": set(), "physical": 0, "flags": set()}
        )
        s["logical"] += 1
        s["model"] = s["model"] or fields.get("model name") or fields.get("cpu model") or ""
        if "core id" in fields:
            s["cores"].add(fields["core id"])
        if fields.get("cpu cores", "").isdigit():
            s["physical"] = int(fields["cpu cores"])
        flags = (fields.get("flags") or fields.get("features") or "").split()
        s["flags"].update(f for f in flags if f in NOTABLE_CPU_FLAGS)
    out = []
    for index in sorted(sockets):
        s = sockets[index]
        physical = s["physical"] or len(s["cores"]) or s["logical"]
        model = s["model"] or machine or "unknown CPU"
        flags = [f for f in NOTABLE_CPU_FLAGS if f in s["flags"]]
        out.append(
            Cpu(
                index=index,
                model=model,
                logical_cores=s["logical"],
                physical_cores=physical,
                flags=flags,
            )
        )
    return out


def list_cpus() -> list[Cpu]:
    """The host's CPU packages (one entry with the OS's core count where /proc is absent)."""
    try:
        cpus = parse_cpuinfo(Path("/proc/cpuinfo").read_text(), platform.machine())
    except OSError:
        cpus = []
    if cpus:
        return cpus
    n = os.cpu_count() or 1
    return [
        Cpu(
            index=0,
            model=platform.processor() or platform.machine() or "unknown CPU",
            logical_cores=n,
            physical_cores=n,
        )
    ]


def usable_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- GPUs ---------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else ""


def list_gpus() -> list[Gpu]:
    """NVIDIA GPUs through NVML; an empty list without ``nvidia-ml-py`` or a driver."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:  # no driver / no device: a CPU-only host
        log.debug("nvml_unavailable", error=str(err))
        return []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cuda = _cuda_version(int(pynvml.nvmlSystemGetCudaDriverVersion()))
        except pynvml.NVMLError:
            cuda = ""
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            try:
                bus_id = _text(pynvml.nvmlDeviceGetPciInfo(h).busId)
            except pynvml.NVMLError:
                bus_id = ""
            gpus.append(
                Gpu(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                    memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    compute_capability=f"{major}.{minor}",
                    pci_bus_id=bus_id,
                    driver_version=driver,
                    cuda_driver_version=cuda,
                )
            )
        return gpus
    except pynvml.NVMLError as err:
        log.warning("nvml_query_failed", error=str(err))
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


class GpuReading(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU's live numbers (None: NVML does not report that one for this GPU)."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_used_bytes: int | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None


def gpu_readings() -> list[GpuReading] | None:
    """Every GPU's utilization, memory, temperature and power now; None where NVML is not
    available (no ``nvidia-ml-py``, no driver), never an exception."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        log.debug("nvml_unavailable", error=str(err))
        return None

    def _or_none(read: Any) -> Any:
        try:
            return read()
        except pynvml.NVMLError:
            return None

    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = _or_none(lambda h=h: pynvml.nvmlDeviceGetMemoryInfo(h))
            rates = _or_none(lambda h=h: pynvml.nvmlDeviceGetUtilizationRates(h))
            temp = _or_none(
                lambda h=h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            )
            milliwatts = _or_none(lambda h=h: pynvml.nvmlDeviceGetPowerUsage(h))
            out.append(
                GpuReading(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    uuid=_text(_or_none(lambda h=h: pynvml.nvmlDeviceGetUUID(h)) or ""),
                    memory_total_bytes=int(memory.total) if memory is not None else 0,
                    memory_used_bytes=int(memory.used) if memory is not None else None,
                    utilization_ratio=float(rates.gpu) / 100.0 if rates is not None else None,
                    temperature_celsius=float(temp) if temp is not None else None,
                    power_watts=float(milliwatts) / 1000.0 if milliwatts is not None else None,
                )
            )
        return out
    except pynvml.NVMLError as err:
        log.warning("nvml_query_failed", error=str(err))
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


# -- fingerprint --------------------------------------------------------------------


def package_versions(names: Iterable[str] = RUNTIME_PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata (None when absent); imports nothing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_fingerprint() -> dict[str, object]:
    """What a benchmark or training result was measured on, as a JSON-ready dict."""
    cpus = list_cpus()
    gpus = list_gpus()
    fp: dict[str, object] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpus[0].model if cpus else "",
        "cpu_sockets": len(cpus),
        "cpu_logical_cores": sum(c.logical_cores for c in cpus),
        "cpu_physical_cores": sum(c.physical_cores for c in cpus),
        "cpu_flags": cpus[0].flags if cpus else [],
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "gpus": [msgspec.to_builtins(g) for g in gpus],
        "gpu_driver": gpus[0].driver_version if gpus else None,
        "cuda_driver": gpus[0].cuda_driver_version if gpus else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
    }
    torch = sys.modules.get("torch")  # only when the caller already paid for the import
    if torch is not None:
        fp["torch_cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
        fp["torch_threads"] = torch.get_num_threads()
    return fp


def main() -> None:
    """``python -m cvops.core.accel``: print the fingerprint as JSON."""
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(host_fingerprint())) + b"\n")


if __name__ == "__main__":
    main()
