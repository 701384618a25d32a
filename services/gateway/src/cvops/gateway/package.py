"""The model bundle of a deployment (``GET /deployments/{name}/package``, ``cvops package``).

A deterministic ``.tar.gz`` of what the deployment serves, for a host with Docker and the
NGC Triton image: the model repository (each arm's artifact, named by its sha256 in the
log, and the ``config.pbtxt`` that ``cvops.core.model_repository`` writes for the engine's
native backend with the deployment's batcher settings), a Dockerfile, a tritonclient example,
a README and ``SHA256SUMS``. Built from the gateway's projection and the object store only;
the same deployment gives the same bytes (sorted entries, fixed times and owners, no gzip
name or time).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors

from cvops.contracts import ArtifactRef, TensorSpec
from cvops.contracts.api import ModelVersionView
from cvops.core import ArtifactStore
from cvops.core.artifacts import CHUNK, sha256_file
from cvops.core.model_repository import (
    TRITON_IMAGE,
    ModelEntry,
    RepositoryError,
    config_pbtxt,
    deployment_entry,
    install_version,
    kserve_dtype,
    model_file_name,
)
from cvops.domain.deployment import Arm, DeploymentState, arms
from cvops.gateway.errors import Conflict, NotFound

MTIME = 0  # every entry's time, and the gzip header's: the bytes depend on the content only
SUMS = "SHA256SUMS"
REPOSITORY = "model_repository"
DYNAMIC_EXAMPLE = 224  # the example client's size for a dynamic dimension after the batch


@dataclass(frozen=True)
class BundledArm:
    """One arm as the bundle holds it: a Triton version and the files it serves."""

    arm: Arm
    format: str
    artifact: ArtifactRef
    companions: list[ArtifactRef]


@dataclass(frozen=True)
class BundlePlan:
    """What a deployment's bundle holds, before any byte is fetched."""

    name: str
    state: DeploymentState
    entry: ModelEntry
    arms: list[BundledArm]


@dataclass
class Bundle:
    """A built bundle on disk: stream it, then ``close`` it (the chunks do at their end)."""

    filename: str
    path: Path
    size: int
    sha256: str

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            with open(self.path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
        finally:
            self.close()

    def close(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def plan_bundle(
    state: DeploymentState | None, name: str, versions: Mapping[int, ModelVersionView | None]
) -> BundlePlan:
    """What ``name``'s bundle holds: what the router serves now (``state.serving``), with the
    registry's record of the primary version's tensors (the router's too where it cannot
    read the file). ``versions``: the model's versions the arms name."""
    if state is None:
        raise NotFound(f"no deployment {name!r}")
    if not state.routable:
        why = f": {state.serving_reason}" if state.serving_reason else ""
        raise Conflict(f"deployment {name} serves nothing ({state.phase}{why}); nothing to package")
    spec = state.serving
    bundled: list[BundledArm] = []
    for arm in arms(spec):
        found = versions.get(arm.version)
        if arm.served is not None:
            bundled.append(
                BundledArm(
                    arm=arm,
                    format=arm.served.format,
                    artifact=arm.served.artifact,
                    companions=list(arm.served.companions),
                )
            )
        elif found is not None:
            bundled.append(
                BundledArm(arm=arm, format="onnx", artifact=found.artifact, companions=[])
            )
        else:
            raise Conflict(f"{spec.model_name}:{arm.version} is not in the catalog")
    primary = versions.get(spec.version)
    if primary is None or not primary.inputs or not primary.outputs:
        raise Conflict(f"{spec.model_name}:{spec.version} has no recorded inputs and outputs")
    try:
        entry = deployment_entry(
            name,
            spec,
            [a.arm.engine for a in bundled],
            [a.arm.slot for a in bundled],
            (list(primary.inputs), list(primary.outputs)),
            native=True,
        )
    except RepositoryError as err:
        raise Conflict(f"deployment {name} cannot be packaged for the NGC image: {err}") from err
    return BundlePlan(name=name, state=state, entry=entry, arms=bundled)


async def build_bundle(plan: BundlePlan, store: ArtifactStore, spool: Path) -> Bundle:
    """Fetch each arm's files (digests checked) and write the bundle under ``spool``."""
    spool.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bundle-", dir=spool))
    try:
        blobs = work / "blobs"
        fetched: dict[str, Path] = {}
        for ref in [r for a in plan.arms for r in (a.artifact, *a.companions)]:
            if ref.sha256 not in fetched:
                fetched[ref.sha256] = await _fetch(store, ref, blobs / ref.sha256)
        # tar and gzip in a thread: a large artifact must not hold the event loop
        bundle = await asyncio.to_thread(_assemble, plan, fetched, work)
        shutil.rmtree(blobs, ignore_errors=True)
        return bundle
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _assemble(plan: BundlePlan, fetched: Mapping[str, Path], work: Path) -> Bundle:
    """Lay out the bundle's tree under ``work`` and write it as one reproducible tar.gz."""
    root = work / plan.name
    model_dir = root / REPOSITORY / plan.name
    for a in plan.arms:
        companions = [(fetched[c.sha256], c.filename) for c in a.companions]
        blob = fetched[a.artifact.sha256]
        install_version(blob, model_dir / str(a.arm.slot), a.format, companions)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(plan.entry), encoding="utf-8")
    for filename, text in bundle_texts(plan).items():
        (root / filename).write_text(text, encoding="utf-8")
    (root / SUMS).write_text(sha256sums(root), encoding="utf-8")
    out = work / f"{plan.name}.tar.gz"
    with open(out, "wb") as fh:
        write_tar_gz(root, plan.name, fh)
    shutil.rmtree(root, ignore_errors=True)
    return Bundle(out.name, out, out.stat().st_size, sha256_file(out))


async def _fetch(store: ArtifactStore, ref: ArtifactRef, target: Path) -> Path:
    gone = NotFound(f"artifact {ref.sha256[:12]} is no longer in the object store")
    if not await store.exists(ref.sha256):
        raise gone
    try:
        return await store.get_file(ref.sha256, target)
    except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError) as err:
        raise gone from err


# -- the files --------------------------------------------------------------------------------


def sha256sums(root: Path) -> str:
    """``sha256sum -c`` input for every file under ``root``, sorted by path."""
    lines = [
        f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
        for p in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix())
        if p.is_file() and p.name != SUMS
    ]
    return "".join(f"{line}\n" for line in lines)


def write_tar_gz(root: Path, top: str, out: io.BufferedIOBase | io.BufferedWriter) -> None:
    """A reproducible tar.gz of ``root`` under the folder ``top``: sorted entries, one time,
    owner root, modes 0755 (folders, scripts) and 0644, no name or time in the gzip header."""
    paths = sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix())
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=MTIME, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_info(top, tarfile.DIRTYPE, 0o755))
        for p in paths:
            name = f"{top}/{p.relative_to(root).as_posix()}"
            if p.is_dir():
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
                continue
            info = _info(name, tarfile.REGTYPE, 0o755 if p.suffix == ".py" else 0o644)
            info.size = p.stat().st_size
            with open(p, "rb") as fh:
                tar.addfile(info, fh)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def bundle_texts(plan: BundlePlan) -> dict[str, str]:
    """The bundle's own files besides the model repository: Dockerfile, client, README."""
    return {
        "Dockerfile": dockerfile(plan),
        "client.py": example_client(plan.name, plan.state.serving.version, plan.entry),
        "README.md": readme(plan),
    }


def dockerfile(plan: BundlePlan) -> str:
    return f"""\
# The cvops deployment {plan.name} as a Triton Inference Server image.
#   docker build -t cvops-{plan.name} .
FROM {TRITON_IMAGE}
COPY {REPOSITORY} /models
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--disable-auto-complete-config"]
"""


def _example_shape(t: TensorSpec, batching: bool) -> list[int]:
    if batching:
        return [1, *(d if d >= 0 else DYNAMIC_EXAMPLE for d in t.shape[1:])]
    return [d if d >= 0 else 1 for d in t.shape] or [1]


def example_client(name: str, version: int, entry: ModelEntry) -> str:
    """``client.py``: tritonclient.http sends ``name`` (Triton version ``version``) a random
    input of each input's shape (a batch of one) and datatype, and prints the top class."""
    inputs = [
        (t.name, _example_shape(t, entry.batching), kserve_dtype(t.dtype)) for t in entry.inputs
    ]
    return f'''\
#!/usr/bin/env python3
"""Send one random input to the {name} model on Triton and print the top class.

    pip install "tritonclient[http]" numpy
    python client.py --url localhost:8000
"""

import argparse

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import triton_to_np_dtype

MODEL = {json.dumps(name)}
VERSION = {json.dumps(str(version))}  # the primary arm
INPUTS = {json.dumps(inputs)}  # name, shape (batch of one), datatype
OUTPUT = {json.dumps(entry.outputs[0].name)}


def random_input(rng, shape, datatype):
    dtype = triton_to_np_dtype(datatype)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)
    return rng.integers(0, 2 if datatype == "BOOL" else 100, shape).astype(dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8000", help="Triton's HTTP address")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    client = httpclient.InferenceServerClient(url=args.url)
    try:
        tensors = []
        for name, shape, datatype in INPUTS:
            tensor = httpclient.InferInput(name, shape, datatype)
            tensor.set_data_from_numpy(random_input(rng, shape, datatype))
            tensors.append(tensor)
        result = client.infer(
            MODEL,
            tensors,
            model_version=VERSION,
            outputs=[httpclient.InferRequestedOutput(OUTPUT)],
        )
        scores = result.as_numpy(OUTPUT).reshape(-1)
        top = int(np.argmax(scores))
        print(f"{{MODEL}} version {{VERSION}}: top class {{top}} (score {{scores[top]:.4f}})")
    finally:
        client.close()


if __name__ == "__main__":
    main()
'''


def _tensor_line(t: TensorSpec) -> str:
    return f"| `{t.name}` | {kserve_dtype(t.dtype)} | {t.shape} |"


def readme(plan: BundlePlan) -> str:
    spec, entry, name = plan.state.serving, plan.entry, plan.name
    gpu = " --gpus all" if entry.gpu else ""
    arm_lines = "\n".join(
        f"| {a.arm.name} | {a.arm.slot} | {spec.model_name}:{a.arm.version} | {a.arm.engine} "
        f"| {a.arm.precision} | `{model_file_name(a.format)}` | `{a.artifact.sha256}` |"
        for a in plan.arms
    )
    canary = ""
    if spec.canary is not None:
        canary = (
            f"\nThe canary arm is loaded as its own Triton version. Splitting traffic "
            f"({spec.canary.weight_percent:g} % to the canary) is the cvops router's job; here "
            "a client chooses the version it asks (`model_version`), and one that names none "
            "gets the highest version Triton serves.\n"
        )
    batcher = (
        f"dynamic batching up to {entry.max_batch_size}, preferred batch sizes "
        f"{sorted(set(entry.preferred_batch_sizes)) or 'none'}, at most "
        f"{entry.max_queue_delay_us} µs in the queue"
        if entry.batching
        else "no batching (max_batch_size 0)"
    )
    tensors = "\n".join(_tensor_line(t) for t in (*entry.inputs, *entry.outputs))
    return f"""\
# {name}: a cvops model bundle for Triton Inference Server

This bundle holds exactly what the cvops deployment `{name}` serves: {spec.model_name}
version {spec.version} on {spec.engine} at {spec.precision}, as a Triton model repository
for the `{entry.backend}` backend of the NGC image `{TRITON_IMAGE}`.

## Contents

- `{REPOSITORY}/{name}/config.pbtxt`: the model configuration cvops generates ({batcher};
  {entry.instance_count} instance(s) on the {"GPU" if entry.gpu else "CPU"}).
- `{REPOSITORY}/{name}/<version>/`: each served artifact, named in the cvops event log by
  its sha256:

| arm | Triton version | model version | engine | precision | file | sha256 |
|---|---|---|---|---|---|---|
{arm_lines}

- `Dockerfile`: the Triton image with this repository in `/models`.
- `client.py`: a tritonclient example that sends a random input and prints the top class.
- `SHA256SUMS`: the digest of every other file.
{canary}
Tensors (the first dimension is the batch when batching; -1 is dynamic):

| tensor | datatype | shape |
|---|---|---|
{tensors}

## Check, build, run, call

```bash
sha256sum -c SHA256SUMS
docker build -t cvops-{name} .
docker run --rm{gpu} -p 8000:8000 -p 8001:8001 -p 8002:8002 cvops-{name}
curl -fsS localhost:8000/v2/health/ready && echo ready
pip install "tritonclient[http]" numpy
python client.py --url localhost:8000
```

Triton serves KServe v2 over HTTP on 8000 and gRPC on 8001, and Prometheus metrics on 8002.
"""
