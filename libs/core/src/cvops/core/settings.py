"""One settings loader: a msgspec Struct filled from ``CVOPS_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of a local or clustered cvops; ``CVOPS_<FIELD>`` overrides each."""

    home: str = ".cvops"
    nats_url: str = ""  # empty: the embedded server on nats_port
    # who this process is to NATS (the launcher gives each service its own user; empty:
    # connect without credentials, e.g. a test server without authorization)
    nats_user: str = ""
    nats_password: str = ""
    nats_port: int = 4250
    nats_monitor_port: int = 8250
    # the embedded NATS's Go profiler (/debug/pprof/heap on 127.0.0.1), 0: off
    nats_prof_port: int = 0
    nats_sync_always: bool = True
    stream_replicas: int = 1
    duplicate_window_s: float = 120.0
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # gateway worker processes sharing gateway_port, each with its own projection files
    gateway_workers: int = 1
    router_host: str = "127.0.0.1"
    router_http_port: int = 8000
    router_grpc_port: int = 8001
    router_metrics_port: int = 8002
    # who answers the router's HTTP port: "nginx" (the router writes its config and state),
    # "python" (the router's own listener), "auto": nginx where it and its njs module exist
    router_data_plane: str = "auto"
    # CPU threads each served engine's session may use (ONNX Runtime's intra-op pool, OpenVINO's
    # inference threads), 0: the runtime's own choice, every core. Set it on a shared host:
    # every deployment's engine otherwise sizes (and spins) its pool for the whole machine
    router_engine_threads: int = 0
    nginx_binary: str = ""  # empty: nginx on PATH, /usr/local/sbin or /usr/sbin
    nginx_njs_module: str = ""  # empty: ngx_http_js_module.so in /usr/{local/,}lib/nginx/modules
    triton_http_port: int = 8100
    triton_grpc_port: int = 8101
    triton_metrics_port: int = 8102
    # Docker/cluster: an external Triton (HTTP URL) whose model repository the router writes
    # at triton_model_repository; empty: the router supervises its own tritonserver
    triton_url: str = ""
    triton_model_repository: str = ""
    # the backend the router writes models for on external Tritons: empty means the NGC
    # image's native one per engine (``onnxruntime``...); ``python`` for tritonservers that
    # have only the python backend (nvidia-pytriton's), as the supervised one always does
    triton_backend: str = ""
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers so Prometheus can scrape
    # <service>_metrics_port: one per service of cvops.core.services that serves only
    # metrics (libs/core/tests/test_services.py holds the two to each other)
    registry_metrics_port: int = 9101
    trainer_metrics_port: int = 9102
    converter_metrics_port: int = 9103
    benchmarker_metrics_port: int = 9104
    reporter_metrics_port: int = 9105
    max_upload_bytes: int = 2 * 1024**3
    max_dataset_expanded_bytes: int = 4 * 1024**3
    max_image_pixels: int = 4096 * 4096
    session_ttl_s: int = 12 * 3600
    # gateway sign-in throttle: failed logins per username and per client address within the
    # window before ``POST /auth/login`` answers 429 (0: that limit is off); counted in each
    # gateway process's memory
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_failure_window_s: float = 60.0
    read_your_write_timeout_s: float = 10.0
    upload_verdict_timeout_s: float = 120.0
    # trainer: ack wait of its work (a dead trainer's job/trial comes back after this), how
    # many jobs one instance coordinates and trials it runs at once (0: one per GPU, else 1),
    # GPU trials one user / one role may run at once (0: no limit), GPU lease TTL
    trainer_ack_wait_s: float = 30.0
    trainer_job_slots: int = 4
    trainer_trial_slots: int = 0
    gpu_trials_per_user: int = 2
    gpu_trials_per_role: int = 0
    gpu_lease_ttl_s: float = 60.0
    # converter / benchmarker: ack wait of their jobs (a dead instance's job comes back after
    # this and resumes from its last published target / row)
    converter_ack_wait_s: float = 30.0
    benchmarker_ack_wait_s: float = 30.0
    # `down` (and `local stop`): seconds between SIGTERM and SIGKILL for the services, and
    # again for NATS
    stop_grace_s: float = 10.0
    log_level: str = "info"
    log_json: bool = True

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.nats_port}"

    def metrics_port(self, service: str) -> int:
        return int(getattr(self, f"{service.replace('-', '_')}_metrics_port", 0))


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read ``CVOPS_*`` variables (strings converted to the field types)."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        key = f"CVOPS_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update(overrides)
    return msgspec.convert(values, Settings, strict=False)
