"""Sample uploads for tests (registry, gateway, cross-service): good files and hostile ones.

Every builder returns bytes made on the spot. torch is imported only by the builders of
TorchScript and ``.pt2`` models. ``announce_*`` do what the gateway does with an upload
(store the bytes, publish the event); ``registry_events`` reads the registry's log back.
"""

from __future__ import annotations

import functools
import io
import pickle
import stat
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cvops.contracts import Event, Stamp, decode
from cvops.contracts.registry import DatasetUploadReceived, ModelUploadReceived
from cvops.core import STREAM, ArtifactStore, Bus
from cvops.registry.inspect_dataset import write_npz


class FileMarkerPayload:
    """Unpickling this creates ``marker`` (via ``builtins.open``): proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def crash_like_a_parser() -> None:
    """Die the way a C parser does on hostile bytes (SIGSEGV) — for inspector tests."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def hang(seconds: float) -> None:
    import time

    time.sleep(seconds)


# -- models -------------------------------------------------------------------------------------


def onnx_model(classes: int = 3, features: int = 4, seed: int = 0) -> bytes:
    """A tiny classifier ``logits = x @ W + b`` with a dynamic batch dimension (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


EXTERNAL_TENSOR_CARRIERS = (
    "initializer",
    "sparse_initializer",
    "constant",
    "node_tensors_attribute",
    "if_branch",
    "loop_body",
    "function",
)


def onnx_with_external_tensor(location: str, carrier: str = "constant") -> bytes:
    """A model whose one tensor points at external data ``location`` (e.g. ``../../README.md``).

    ``carrier`` says where the tensor sits (one of ``EXTERNAL_TENSOR_CARRIERS``): a graph
    initializer or sparse initializer, a Constant node's ``value``, the ``tensors`` attribute
    of a custom-domain node, a Constant inside an If branch or a Loop body, or a Constant in a
    model-local function. The model is otherwise well formed, so only the external reference
    can make it fail.
    """
    import onnx
    from onnx import TensorProto, helper

    def external(name: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "4")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def out(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])

    opsets = [helper.make_opsetid("", 17)]
    inputs: list[onnx.ValueInfoProto] = []
    initializers: list[TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    functions: list[onnx.FunctionProto] = []
    constant = helper.make_node("Constant", [], ["y"], value=external("c"))
    if carrier == "initializer":
        initializers = [external("y0")]
        nodes = [helper.make_node("Identity", ["y0"], ["y"])]
    elif carrier == "sparse_initializer":
        indices = helper.make_tensor("y0_idx", TensorProto.INT64, [1], [0])
        sparse = [helper.make_sparse_tensor(external("y0"), indices, [1])]
        nodes = [helper.make_node("Identity", ["y0"], ["y"])]
    elif carrier == "constant":
        nodes = [constant]
    elif carrier == "node_tensors_attribute":
        opsets.append(helper.make_opsetid("cvops.test", 1))
        weird = helper.make_node("Table", [], ["y"], domain="cvops.test")
        weird.attribute.append(helper.make_attribute("tables", [external("c")]))
        nodes = [weird]
    elif carrier == "if_branch":
        then = helper.make_graph([constant], "then", [], [out("y")])
        other = helper.make_graph(
            [helper.make_node("Constant", [], ["y"], value_floats=[1.0])], "else", [], [out("y")]
        )
        inputs = [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
        nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    elif carrier == "loop_body":
        body = helper.make_graph(
            [constant, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), out("y")],
        )
        inputs = [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ]
        nodes = [helper.make_node("Loop", ["n", "cond"], ["y"], body=body)]
    elif carrier == "function":
        opsets.append(helper.make_opsetid("cvops.test", 1))
        functions = [
            helper.make_function("cvops.test", "Secret", [], ["y"], [constant], opsets[:1])
        ]
        nodes = [helper.make_node("Secret", [], ["y"], domain="cvops.test")]
    else:
        raise ValueError(f"unknown carrier {carrier!r} (one of {EXTERNAL_TENSOR_CARRIERS})")
    graph = helper.make_graph(
        nodes, "external", inputs, [out("y")], initializer=initializers, sparse_initializer=sparse
    )
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    model.ir_version = 8
    return model.SerializeToString()


def _torch_module():  # type: ignore[no-untyped-def]
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return Tiny().eval()


@functools.cache
def torchscript_model() -> bytes:
    """A traced TorchScript archive (conv + linear, 1x8x8 input, 3 classes)."""
    import torch

    traced = torch.jit.trace(_torch_module(), torch.zeros(1, 1, 8, 8))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


@functools.cache
def exported_program() -> bytes:
    """A ``torch.export`` ``.pt2`` archive with a dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(
        _torch_module(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes={"x": {0: batch}}
    )
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def safetensors_weights() -> bytes:
    """safetensors weights of a 2-layer MLP (4*8 + 8 + 8*3 + 3 = 67 parameters)."""
    from safetensors.numpy import save

    return save(
        {
            "fc1.weight": np.zeros((8, 4), dtype=np.float32),
            "fc1.bias": np.zeros(8, dtype=np.float32),
            "fc2.weight": np.zeros((3, 8), dtype=np.float32),
            "fc2.bias": np.zeros(3, dtype=np.float32),
        }
    )


def malicious_pickle(marker: Path, protocol: int = 4) -> bytes:
    """A raw pickle that would create ``marker`` when loaded."""
    return pickle.dumps(FileMarkerPayload(marker), protocol=protocol)


def torch_save_checkpoint(marker: Path) -> bytes:
    """A ``torch.save``-style zip (``archive/data.pkl``) whose pickle would create ``marker``."""
    return _zip(
        {
            "archive/data.pkl": malicious_pickle(marker, protocol=2),
            "archive/version": b"3\n",
            "archive/byteorder": b"little",
        }
    )


def torchscript_with_pickle(marker: Path) -> bytes:
    """A genuine TorchScript archive whose ``data.pkl`` was swapped for a malicious pickle."""
    with zipfile.ZipFile(io.BytesIO(torchscript_model())) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    data_pkl = next(n for n in members if n.endswith("/data.pkl"))
    members[data_pkl] = malicious_pickle(marker, protocol=2)
    return _zip(members)


def _rewrite_zip(data: bytes, edit: dict[str, bytes | None], add: dict[str, bytes]) -> bytes:
    """Copy a zip, replacing members whose name ends with a key of ``edit`` (None drops)."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    root = next(iter(members)).split("/", 1)[0]
    out: dict[str, bytes] = {}
    for name, blob in members.items():
        key = next((k for k in edit if name.endswith(k)), None)
        if key is None:
            out[name] = blob
        elif edit[key] is not None:
            out[name] = edit[key]  # type: ignore[assignment]
    out.update({f"{root}/{k}": v for k, v in add.items()})
    return _zip(out)


def exported_program_with_code(marker: Path) -> bytes:
    """A ``.pt2`` whose shape expression is Python that creates ``marker`` when sympy evals it.

    ``torch.export.load`` runs such an expression (sympy.sympify is eval); the registry must not.
    """
    data = exported_program()
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        program = next(n for n in src.namelist() if n.endswith("models/model.json"))
        text = src.read(program).decode()
    evil = f"__import__('builtins').open('{marker}', 'w') and Symbol('s77', integer=True)"
    start = text.index('"expr_str": "') + len('"expr_str": "')
    end = text.index('"', start)
    text = text[:start] + evil + text[end:]
    return _rewrite_zip(data, {"models/model.json": text.encode()}, {})


def exported_program_with_pickled_weight(marker: Path) -> bytes:
    """A ``.pt2`` whose weight is declared pickled (torch.export.load would unpickle it)."""
    import json

    data = exported_program()
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        name = next(n for n in src.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(src.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    return _rewrite_zip(
        data,
        {
            "model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{first['path_name']}": malicious_pickle(marker),
        },
        {},
    )


def exported_program_with_compiled_code() -> bytes:
    """A ``.pt2`` carrying an AOTInductor shared library (torch.export.load would dlopen it)."""
    return _rewrite_zip(exported_program(), {}, {"data/aotinductor/model/model.so": b"\x7fELF"})


# -- data sets ----------------------------------------------------------------------------------


def png(h: int = 12, w: int = 12, *, value: int = 0, mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(value)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(h: int = 12, w: int = 12, *, value: int = 0) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(value).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def image_folder_zip(
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 6,
    *,
    top: str | None = "pets",
    size: tuple[int, int] = (12, 12),
) -> bytes:
    """An ImageFolder zip: PNGs of ``size`` (one JPEG of another size per class)."""
    files: dict[str, bytes] = {}
    prefix = f"{top}/" if top else ""
    for ci, c in enumerate(classes):
        for i in range(per_class):
            files[f"{prefix}{c}/{i:03d}.png"] = png(*size, value=ci * 1000 + i)
        files[f"{prefix}{c}/odd.jpg"] = jpeg(size[0] + 4, size[1] + 2, value=ci)
    return _zip(files)


def dataset_npz(n: int = 40, classes: int = 4, size: int = 8, channels: int | None = 3) -> bytes:
    """An upload-style npz: ``x`` uint8 images, ``y`` labels."""
    rng = np.random.default_rng(n)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    arrays: dict[str, np.ndarray] = {
        "x": rng.integers(0, 256, size=shape, dtype=np.uint8),
        "y": (np.arange(n) % classes).astype(np.int64),
    }
    return _npz(arrays)


def large_images_zip(count: int = 24, side: int = 4096) -> bytes:
    """``count`` blank grayscale PNGs of side x side in two classes: a few KB zipped.

    Each image is within a 4096 x 4096 per-image cap; together they decode to
    count * side**2 bytes (402.7 MB for the defaults), which the data-set cap must refuse.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG", optimize=True)
    blank = buf.getvalue()
    return _zip({f"{('a', 'b')[i % 2]}/{i:03d}.png": blank for i in range(count)})


def npz_declaring(shape: tuple[int, ...], n_labels: int = 2) -> bytes:
    """An npz whose ``x`` header declares uint8 ``shape`` but which holds no pixel data.

    Loading it would allocate the declared size before finding the data missing, so only a
    check of the header (before loading) refuses it for its size.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    labels = io.BytesIO()
    np.lib.format.write_array(labels, np.arange(n_labels, dtype=np.int64) % 2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", header.getvalue())
        zf.writestr("y.npy", labels.getvalue())
    return buf.getvalue()


def zip_slip() -> bytes:
    return _zip({"cat/a.png": png(), "dog/b.png": png(value=1), "../../evil.png": png(value=2)})


def absolute_path_zip() -> bytes:
    return _zip({"cat/a.png": png(), "/etc/cron.d/evil.png": png(value=2)})


def symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat/a.png", png())
        zf.writestr("dog/b.png", png(value=1))
        link = zipfile.ZipInfo("dog/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def zip_bomb(expanded: int = 64 * 1024 * 1024) -> bytes:
    """A highly compressible member (zeros): ratio in the hundreds."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("cat/a.png", png())
        with zf.open("dog/huge.png", "w", force_zip64=True) as fh:
            chunk = bytes(1024 * 1024)
            for _ in range(expanded // len(chunk)):
                fh.write(chunk)
    return buf.getvalue()


def decompression_bomb_png(side: int = 6000) -> bytes:
    """A 1-bit PNG of side x side pixels: tiny on disk, huge once decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decompression_bomb_zip(side: int = 6000) -> bytes:
    return _zip(
        {
            "cat/a.png": png(),
            "cat/b.png": png(value=1),
            "dog/c.png": png(value=2),
            "dog/bomb.png": decompression_bomb_png(side),
        }
    )


def undecodable_zip() -> bytes:
    return _zip(
        {"cat/a.png": png(), "dog/b.png": png(value=1), "dog/broken.png": b"\x89PNG\r\n\x1a\nnope"}
    )


def one_class_zip() -> bytes:
    return _zip({f"cat/{i}.png": png(value=i) for i in range(5)})


def object_array_npz(marker: Path) -> bytes:
    """An npz whose ``x`` is an object array: loading it with pickles on would create marker."""
    buf = io.BytesIO()
    np.savez(
        buf,
        x=np.array([FileMarkerPayload(marker), 1], dtype=object),
        y=np.array([0, 1]),
    )
    return buf.getvalue()


def mismatched_npz() -> bytes:
    return _npz(
        {
            "x": np.zeros((10, 8, 8), dtype=np.uint8),
            "y": np.zeros(9, dtype=np.int64),
        }
    )


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.npz"
        write_npz(path, arrays)
        return path.read_bytes()


# -- talking to the log like the gateway does ---------------------------------------------------


async def announce_model_upload(
    bus: Bus, data: bytes, name: str, *, actor: str = "alice", **fields: object
) -> ModelUploadReceived:
    """Store ``data`` in the artifact store and publish its ModelUploadReceived."""
    upload_id = uuid.uuid4().hex[:12]
    ref = await ArtifactStore(bus).put_bytes(data, filename=f"{name}.bin")
    stamp = Stamp(now=datetime.now(UTC), actor=actor, correlation_id=f"req-{upload_id}")
    event = ModelUploadReceived(
        **stamp.envelope("upload"),  # type: ignore[arg-type]
        upload_id=upload_id,
        model_name=name,
        artifact=ref,
        **fields,  # type: ignore[arg-type]
    )
    await bus.publish(event)
    return event


async def announce_dataset_upload(
    bus: Bus, data: bytes, name: str, *, actor: str = "bob", seed: int = 1
) -> DatasetUploadReceived:
    """Store ``data`` in the artifact store and publish its DatasetUploadReceived."""
    upload_id = uuid.uuid4().hex[:12]
    ref = await ArtifactStore(bus).put_bytes(data, filename=f"{name}.zip")
    stamp = Stamp(now=datetime.now(UTC), actor=actor, correlation_id=f"req-{upload_id}")
    event = DatasetUploadReceived(
        **stamp.envelope("upload"),  # type: ignore[arg-type]
        upload_id=upload_id,
        dataset_name=name,
        artifact=ref,
        seed=seed,
    )
    await bus.publish(event)
    return event


async def artifact_gone(store: ArtifactStore, sha256: str, within: float = 10.0) -> bool:
    """Whether the blob ``sha256`` is out of the store within ``within`` seconds (the registry
    deletes refused bytes right after its verdict)."""
    import asyncio

    for _ in range(int(within / 0.1)):
        if not await store.exists(sha256):
            return True
        await asyncio.sleep(0.1)
    return False


async def registry_events(bus: Bus) -> list[Event]:
    """Every registry event in the stream, in order (read with an ephemeral consumer)."""
    import contextlib

    import nats.errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    last = await bus.last_seq()
    sub = await bus.js.pull_subscribe(
        "cvops.evt.registry.>",
        stream=STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30
        ),
    )
    events: list[Event] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except nats.errors.TimeoutError:
                break
            events.extend(e for m in msgs if isinstance(e := decode(m.data), Event))
            if msgs[-1].metadata.sequence.stream >= last:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return events
