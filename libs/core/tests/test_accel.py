"""Device listing: /proc/cpuinfo parsing, NVML mapping, and a fingerprint that skips torch."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import msgspec
import pytest

from cvops.core import accel

X86_TWO_SOCKETS = "\n\n".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    f"physical id\t: {i // 4}\ncore id\t\t: {(i % 4) // 2}\ncpu cores\t: 2\n"
    "flags\t\t: fpu sse avx2 fma avx512f avx512_vnni amx_tile"
    for i in range(8)
)

ARM = (
    "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n\n"
    "processor\t: 1\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n\n"
    "Hardware\t: some board\n"
)


def test_cpuinfo_of_two_sockets_gives_two_packages() -> None:
    cpus = accel.parse_cpuinfo(X86_TWO_SOCKETS)
    assert [c.index for c in cpus] == [0, 1]
    assert cpus[0].model == "Intel(R) Xeon(R) Platinum 8480+"
    assert (cpus[0].logical_cores, cpus[0].physical_cores) == (4, 2)
    assert cpus[0].flags == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]


def test_arm_cpuinfo_without_model_name_uses_the_machine() -> None:
    (cpu,) = accel.parse_cpuinfo(ARM, machine="aarch64")
    assert cpu.model == "aarch64"
    assert cpu.logical_cores == 2 and cpu.flags == ["asimd", "sve"]


def test_this_host_has_at_least_one_cpu() -> None:
    cpus = accel.list_cpus()
    assert cpus and cpus[0].logical_cores >= 1
    assert 1 <= accel.usable_cores() <= sum(c.logical_cores for c in cpus)


class _NVMLError(Exception):
    pass


def _fake_nvml(*, driver: bool) -> types.ModuleType:
    """An NVML stand-in (the hardware is what is faked here, not a broker)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = _NVMLError  # type: ignore[attr-defined]

    def init() -> None:
        if not driver:
            raise _NVMLError("Driver Not Loaded")

    m.nvmlInit = init  # type: ignore[attr-defined]
    m.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)  # type: ignore[attr-defined]
    m.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=f"0000:0{h}:00.0")  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30)  # type: ignore[attr-defined]
    return m


def test_gpus_come_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(driver=True))
    gpus = accel.list_gpus()
    assert [g.uuid for g in gpus] == ["GPU-0", "GPU-1"]
    assert gpus[1].name == "NVIDIA H100 80GB HBM3"
    assert gpus[0].compute_capability == "9.0"
    assert gpus[0].cuda_driver_version == "12.4"
    assert gpus[0].pci_bus_id == "0000:00:00.0"


def test_no_driver_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(driver=False))
    assert accel.list_gpus() == []


def test_no_nvml_package_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert accel.list_gpus() == []


def test_fingerprint_does_not_import_torch() -> None:
    code = (
        "import sys, json; from cvops.core.accel import host_fingerprint; "
        "fp = host_fingerprint(); assert 'torch' not in sys.modules; print(json.dumps(fp))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    fp = json.loads(out.stdout)
    assert fp["cpu_logical_cores"] >= 1 and fp["python"].startswith("3.")
    assert set(fp["packages"]) >= {"torch", "onnxruntime", "openvino"}
    assert msgspec.json.decode(msgspec.json.encode(fp)) == fp
