"""Body of every python-backend model the router deploys: copied as ``<version>/model.py``.

It runs inside Triton's python-backend stub (an isolated interpreter that imports
``triton_python_backend_utils``), loads the version's artifact with the runtime its
``serving.json`` names (ONNX Runtime for ``model.onnx`` — FP32, FP16 or INT8 QDQ — OpenVINO
for ``model.xml``) and serves dynamically batched requests: concatenate the batch, run once,
split.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class _OpenVino:
    """An OpenVINO compiled model behind ONNX Runtime's ``run(names, feeds)``."""

    def __init__(self, path, threads):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.ports = {p.get_any_name(): p for p in self.compiled.outputs}

    def run(self, names, feeds):
        result = self.request.infer(feeds)
        return [np.asarray(result[self.ports[n]]) for n in names]


def _serving(version_dir, config):
    """The version's own settings (``serving.json``), else the model's parameters."""
    path = os.path.join(version_dir, "serving.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {
        "format": "onnx",
        "providers": _param(config, "EXECUTION_PROVIDERS", "CPUExecutionProvider").split(","),
    }


class TritonPythonModel:
    """Triton's python-backend entry points."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        serving = _serving(version_dir, config)
        threads = int(_param(config, "INTRA_OP_THREADS", "0"))
        if serving.get("format") == "openvino-ir":
            self.session = _OpenVino(os.path.join(version_dir, "model.xml"), threads)
        else:
            path = os.path.join(version_dir, _param(config, "ONNX_FILE", "model.onnx"))
            available = set(ort.get_available_providers())
            wanted = serving.get("providers") or ["CPUExecutionProvider"]
            providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path, options, providers=providers)
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        if not self.batching or len(requests) == 1:
            return [self._run_one(r) for r in requests]
        # Requests of one shape are concatenated and run once; a shape that differs
        # (dynamic spatial dims) runs in its own group.
        groups = {}
        for index, request in enumerate(requests):
            feeds = {
                n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                for n in self.input_names
            }
            key = tuple((n, feeds[n].shape[1:], feeds[n].dtype.str) for n in self.input_names)
            groups.setdefault(key, []).append((index, feeds))
        responses = [None] * len(requests)
        for members in groups.values():
            try:
                sizes = [feeds[self.input_names[0]].shape[0] for _, feeds in members]
                batch = {
                    n: np.concatenate([feeds[n] for _, feeds in members]) for n in self.input_names
                }
                outputs = self.session.run(self.output_names, batch)
                start = 0
                for (index, _), size in zip(members, sizes, strict=True):
                    tensors = [
                        pb_utils.Tensor(n, np.ascontiguousarray(o[start : start + size]))
                        for n, o in zip(self.output_names, outputs, strict=True)
                    ]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start += size
            except Exception as err:  # one bad group must not fail the others
                for index, _ in members:
                    responses[index] = _error(err)
        return responses

    def _run_one(self, request):
        try:
            feeds = {
                n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                for n in self.input_names
            }
            outputs = self.session.run(self.output_names, feeds)
        except Exception as err:
            return _error(err)
        tensors = [
            pb_utils.Tensor(n, np.ascontiguousarray(o))
            for n, o in zip(self.output_names, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.session = None


def _error(err):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
