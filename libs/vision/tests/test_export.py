"""Every architecture exports to ONNX (dynamo) with a dynamic batch and matches torch in ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cvops.vision import ARCHITECTURES, build_model


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the exporter's own pytree deprecation
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_onnx_export_with_dynamic_batch_matches_torch(arch: str, tmp_path: Path):
    torch.manual_seed(0)
    model = build_model(arch, 5, 3, (16, 24), width=0.25, dropout=0.2)
    # A few training steps' worth of BN statistics, so eval-mode BN is not the identity.
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 24) * 2)
    model.eval()
    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 16, 24),),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, 3, 16, 24)
        with torch.inference_mode():
            expected = model(x).numpy()
        (got,) = session.run(None, {"input": x.numpy()})
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
