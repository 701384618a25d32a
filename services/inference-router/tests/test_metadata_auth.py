"""Non-public deployments are invisible without a token: metadata, config, ready,
statistics, the repository index and ``/v1/predict`` refuse anonymous callers as inference
does, over HTTP and gRPC, and an unknown name is refused exactly like a private one."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from cvops.core import Settings
from cvops.testing import router as t
from cvops.testing.router import Names, deploy_public_and_private

TOKEN = "cvops_metadata_auth_token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PER_MODEL = ("", "/versions/1", "/ready", "/versions/1/ready", "/config", "/stats")


@pytest.fixture(scope="module")
def served(
    router: t.RouterProcess,
    base_settings: Settings,
    names: Names,
    onnx_models: dict[str, Path],
    wait_private_ready: Callable[[t.RouterProcess, str, str], None],
) -> t.RouterProcess:
    """One model version deployed twice: public and not public; a viewer's API token."""
    return deploy_public_and_private(
        router, base_settings, names, [onnx_models["v1"]], TOKEN, wait_private_ready
    )


def get(router: t.RouterProcess, path: str, headers: dict[str, str] | None = None) -> int:
    return t.http_call("GET", f"http://{router.http}{path}", headers=headers)[0]


def test_anonymous_metadata_of_a_non_public_model_is_401(
    served: t.RouterProcess, names: Names
) -> None:
    for tail in PER_MODEL:
        code, body = t.http_call("GET", f"http://{served.http}/v2/models/{names.private}{tail}")
        assert code == 401, tail
        assert json.loads(body) == {"error": f"model '{names.private}' needs a bearer token"}
        assert get(served, f"/v2/models/{names.private}{tail}", BEARER) == 200, tail
        bad = {"Authorization": "Bearer not-a-token"}
        assert get(served, f"/v2/models/{names.private}{tail}", bad) == 401, tail


def test_an_unknown_name_looks_like_a_private_one_without_a_token(
    served: t.RouterProcess, names: Names
) -> None:
    for tail in PER_MODEL:
        code, body = t.http_call("GET", f"http://{served.http}/v2/models/{names.unknown}{tail}")
        assert code == 401, tail
        assert json.loads(body) == {"error": f"model '{names.unknown}' needs a bearer token"}
        assert get(served, f"/v2/models/{names.unknown}{tail}", BEARER) == 404, tail


def test_a_public_models_metadata_is_open(served: t.RouterProcess, names: Names) -> None:
    for tail in PER_MODEL:
        assert get(served, f"/v2/models/{names.public}{tail}") == 200, tail
    http = triton_http.InferenceServerClient(served.http)
    try:
        assert http.get_model_metadata(names.public)["name"] == names.public
        assert http.get_model_config(names.public)["name"] == names.public
    finally:
        http.close()
    g = triton_grpc.InferenceServerClient(served.grpc)
    try:
        assert g.is_model_ready(names.public)
        assert g.get_model_metadata(names.public).name == names.public
        assert g.get_model_config(names.public).config.name == names.public
    finally:
        g.close()


def test_server_routes_stay_open(served: t.RouterProcess) -> None:
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert get(served, path) == 200, path


def test_tritonclient_http_metadata_needs_the_token(served: t.RouterProcess, names: Names) -> None:
    http = triton_http.InferenceServerClient(served.http)
    try:
        for call in (http.get_model_metadata, http.get_model_config):
            with pytest.raises(InferenceServerException) as err:
                call(names.private)
            assert err.value.status() == "401"
            assert call(names.private, headers=BEARER)["name"] == names.private
        assert not http.is_model_ready(names.private)
        assert http.is_model_ready(names.private, headers=BEARER)
    finally:
        http.close()


def test_grpc_metadata_config_ready_and_stats_are_unauthenticated_without_a_token(
    served: t.RouterProcess, names: Names
) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    g = triton_grpc.InferenceServerClient(served.grpc)
    try:
        calls = {
            "ModelMetadata": g.get_model_metadata,
            "ModelConfig": g.get_model_config,
            "ModelReady": g.is_model_ready,
            "ModelStatistics": g.get_inference_statistics,
        }
        for method, call in calls.items():
            for name in (names.private, names.unknown):
                with pytest.raises(InferenceServerException) as err:
                    call(name)
                assert err.value.status() == "StatusCode.UNAUTHENTICATED", (method, name)
                assert err.value.message() == f"model '{name}' needs a bearer token"
        assert g.get_model_metadata(names.private, headers=auth).name == names.private
        assert g.get_model_config(names.private, headers=auth).config.name == names.private
        assert g.is_model_ready(names.private, headers=auth)
        stats = g.get_inference_statistics(names.private, headers=auth)
        assert [m.name for m in stats.model_stats] == [names.private]
        with pytest.raises(InferenceServerException) as err:
            g.get_model_metadata(names.unknown, headers=auth)
        assert err.value.status() == "StatusCode.NOT_FOUND"
    finally:
        g.close()


def test_the_repository_index_without_a_token_lists_no_private_deployment(
    served: t.RouterProcess, names: Names
) -> None:
    url = f"http://{served.http}/v2/repository/index"
    code, body = t.http_call("POST", url, b"{}")
    assert code == 200
    anonymous = {m["name"] for m in json.loads(body)}
    assert names.public in anonymous and names.private not in anonymous
    code, body = t.http_call("POST", url, b"{}", BEARER)
    assert code == 200
    assert {names.public, names.private} <= {m["name"] for m in json.loads(body)}
    assert t.http_call("POST", url, b"{}", {"Authorization": "Bearer not-a-token"})[0] == 401

    g = triton_grpc.InferenceServerClient(served.grpc)
    try:
        anonymous = {m.name for m in g.get_model_repository_index().models}
        assert names.public in anonymous and names.private not in anonymous
        index = g.get_model_repository_index(headers={"authorization": f"Bearer {TOKEN}"})
        assert {names.public, names.private} <= {m.name for m in index.models}
    finally:
        g.close()


def test_all_model_statistics_without_a_token_leave_private_deployments_out(
    served: t.RouterProcess, names: Names
) -> None:
    code, body = t.http_call("GET", f"http://{served.http}/v2/models/stats")
    assert code == 200
    anonymous = {m["name"] for m in json.loads(body)["model_stats"]}
    assert names.public in anonymous and names.private not in anonymous
    code, body = t.http_call("GET", f"http://{served.http}/v2/models/stats", headers=BEARER)
    assert code == 200
    assert {names.public, names.private} <= {m["name"] for m in json.loads(body)["model_stats"]}


def test_anonymous_predict_of_a_private_or_unknown_model_is_401(
    served: t.RouterProcess, names: Names
) -> None:
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    headers = {"Content-Type": "image/png"}
    for name in (names.private, names.unknown):
        url = f"http://{served.http}/v1/predict/{name}"
        code, body = t.http_call("POST", url, png.getvalue(), headers)
        assert code == 401, name
        assert json.loads(body)["error"] == "unauthorized"
    url = f"http://{served.http}/v1/predict/{names.unknown}"
    assert t.http_call("POST", url, png.getvalue(), {**headers, **BEARER})[0] == 404
