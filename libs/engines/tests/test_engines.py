"""Engines behind one interface: the same logits from every available runtime, honest refusals."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cvops.engines import (
    ENGINE_REGISTRY,
    EngineFailure,
    EngineUnavailable,
    OpenVinoEngine,
    OrtCpuEngine,
    OrtCudaEngine,
    TensorRTEngine,
    TorchCompiledEngine,
    TorchEagerEngine,
    available_engines,
    convert,
    create_engine,
    reference_outputs,
)


def test_registry_lists_every_engine_with_availability_or_why():
    statuses = {s.name: s for s in available_engines()}
    assert set(statuses) == set(ENGINE_REGISTRY)
    for status in statuses.values():
        if status.available:
            assert status.detail == "available"
        else:
            assert status.detail.startswith(f"unavailable: {status.name}") or (
                status.detail.startswith("unavailable: tensorrt:")
            )
    assert statuses["onnxruntime-cpu"].available
    assert statuses["torch-eager"].available


def test_cpu_engines_give_the_source_logits(task, tmp_path):
    images = task.val_images[:32]
    expected = reference_outputs(task.model, images)
    ir = convert(task.onnx_path, "openvino", tmp_path)
    cases = [
        (TorchEagerEngine(), task.model),
        (OrtCpuEngine(), task.onnx_path),
        (OrtCpuEngine(threads=1, spinning=False), task.onnx_path),
        (OpenVinoEngine(), ir.path),
        (OpenVinoEngine(), task.onnx_path),
    ]
    for engine, source in cases:
        with engine:
            engine.load(source)
            for batch in (1, 8, 32):
                got = engine.infer(images[:batch])
                assert got.dtype == np.float32
                np.testing.assert_allclose(got, expected[:batch], atol=1e-4, err_msg=engine.name)


def test_openvino_serves_concurrent_callers(task):
    engine = OpenVinoEngine(hint="THROUGHPUT")
    engine.load(task.onnx_path)
    expected = reference_outputs(task.model, task.val_images[:64])
    batches = [task.val_images[i : i + 4] for i in range(0, 64, 4)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(engine.infer, batches))
    engine.close()
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-4)


def test_infer_before_load_is_an_error():
    with pytest.raises(EngineFailure, match="before load"):
        OrtCpuEngine().infer(np.zeros((1, 3, 16, 16), np.float32))


def test_a_missing_runtime_is_refused_not_faked(task):
    for engine in (OrtCudaEngine(), TensorRTEngine()):
        ok, why = engine.available()
        if ok:
            continue
        assert why
        with pytest.raises(EngineUnavailable, match=why.split(":")[0]):
            engine.load(task.onnx_path)


def test_unknown_engine_and_bad_precision_are_refused():
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        create_engine("no-such-engine")
    with pytest.raises(ValueError, match="precision"):
        OrtCpuEngine(precision="fp8")


def test_torch_compiled_reports_why_without_a_toolchain(monkeypatch):
    from cvops.engines import engines as module

    module._inductor_toolchain.cache_clear()
    monkeypatch.setattr(module, "_compiler_candidates", lambda: ["no-such-cxx"])
    try:
        ok, why = TorchCompiledEngine().available()
        status = {s.name: s for s in available_engines()}["torch-compiled"]
    finally:
        module._inductor_toolchain.cache_clear()
    if ok:  # a CUDA host compiles with triton instead
        return
    assert "no C++ compiler" in why
    assert status.detail == f"unavailable: {why}"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("CVOPS_SLOW_TESTS"),
    reason="torch.compile on CPU takes a minute cold; set CVOPS_SLOW_TESTS=1",
)
def test_torch_compiled_matches_eager(task):
    engine = TorchCompiledEngine()
    ok, why = engine.available()
    if not ok:
        pytest.skip(why)
    engine.load(task.model)
    images = task.val_images[:8]
    np.testing.assert_allclose(
        engine.infer(images), reference_outputs(task.model, images), atol=1e-4
    )


def test_the_registry_is_keyed_by_the_contracts_engine_names() -> None:
    from cvops.contracts.conversion import ENGINE_NAMES

    assert tuple(ENGINE_REGISTRY) == ENGINE_NAMES
