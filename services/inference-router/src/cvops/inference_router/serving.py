"""The served-output check: what Triton returns for an arm against what was measured.

Before a deployment goes ready the router sends the arm's probe (a few validation inputs
with the source model's outputs on them, stored by the converter beside the artifact)
through Triton, one image a request, and compares top-1 agreement and the max abs error
with the conversion's parity record (``cvops.domain.deployment.serving_check``).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from cvops.contracts import TensorSpec
from cvops.contracts.deployment import ServingCheck
from cvops.domain.deployment import Arm, serving_check
from cvops.inference_router.routing import Instance


class Mismatch(Exception):
    """What Triton serves differs from what the conversion measured (or cannot be asked)."""


def read_probe(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The probe's inputs and reference outputs (an ``.npz`` without pickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs, reference = np.asarray(data["inputs"]), np.asarray(data["reference"])
    except (OSError, ValueError, KeyError) as err:
        raise Mismatch(f"the probe {path.name[:12]} is not readable: {err}") from err
    if len(inputs) == 0 or len(inputs) != len(reference):
        raise Mismatch(
            f"the probe {path.name[:12]} has {len(inputs)} inputs, {len(reference)} outputs"
        )
    return inputs.astype(np.float32), reference.astype(np.float32)


def compare(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, max abs error) of served outputs against the reference."""
    out = outputs.reshape(len(outputs), -1)
    ref = reference.reshape(len(reference), -1)
    if out.shape != ref.shape:
        return 0.0, float("inf")
    agreement = float(np.mean(out.argmax(axis=1) == ref.argmax(axis=1)))
    return agreement, float(np.max(np.abs(out - ref)))


async def check(
    inst: Instance,
    model: str,
    arm: Arm,
    probe: Path,
    io: tuple[list[TensorSpec], list[TensorSpec]],
) -> ServingCheck:
    """Run the probe through ``model`` version ``arm.slot`` on ``inst`` and judge it."""
    assert arm.served is not None
    inputs, reference = read_probe(probe)
    feed, out = io[0][0], io[1][0]
    client = triton_http.InferenceServerClient(inst.http, conn_timeout=60)
    outputs = []
    try:
        for image in inputs:
            tensor = triton_http.InferInput(feed.name, [1, *image.shape], "FP32")
            tensor.set_data_from_numpy(image[None])
            result = await client.infer(
                model,
                [tensor],
                model_version=str(arm.slot),
                outputs=[triton_http.InferRequestedOutput(out.name)],
            )
            outputs.append(np.asarray(result.as_numpy(out.name), dtype=np.float32)[0])
    except InferenceServerException as err:
        raise Mismatch(f"Triton refused the probe of {arm.name}: {err.message() or err}") from err
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        raise Mismatch(f"Triton did not answer the probe of {arm.name}: {err}") from err
    finally:
        await client.close()
    agreement, error = compare(np.stack(outputs), reference)
    return serving_check(len(inputs), agreement, error, arm.served)
