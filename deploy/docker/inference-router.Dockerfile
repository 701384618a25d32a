# cvops inference-router: KServe v2 front of Triton: load/unload, routing, canary, health, metrics.
# Build from the repository root:
#   docker build -f deploy/docker/inference-router.Dockerfile -t cvops/inference-router .

# -- build: a virtual environment with the pinned third-party packages and the workspace
# members this service needs, installed (not editable); the runtime stage copies only it
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# every third-party version pinned, as ./justw installs them (pip itself too)
COPY requirements.lock ./
RUN pip install -c requirements.lock pip
# the workspace members this service needs (contracts and core come first)
COPY contracts/ contracts/
COPY libs/domain/ libs/domain/
COPY libs/core/ libs/core/
COPY services/inference-router/ services/inference-router/
RUN pip install -c requirements.lock --build-constraint requirements.lock \
    ./contracts ./libs/domain ./libs/core ./services/inference-router

# -- runtime: the slim Python, the venv, an unprivileged user
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    CVOPS_HOME=/var/lib/cvops \
    CVOPS_METRICS_HOST=0.0.0.0
# nginx with its njs module: the router's HTTP data plane (it writes nginx's configuration
# and state under its home and runs nginx as its child; the package's own site is removed)
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx libnginx-mod-http-js \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
RUN useradd --system --uid 10001 --home-dir /var/lib/cvops cvops \
    && mkdir -p /var/lib/cvops && chown cvops:cvops /var/lib/cvops
COPY --from=build /opt/venv /opt/venv
USER cvops
WORKDIR /var/lib/cvops
VOLUME ["/var/lib/cvops"]
EXPOSE 8000 8001 8002

# healthy while its health endpoint answers 2xx (cvops.core.services); python's urllib, so
# the image needs no curl
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CVOPS_ROUTER_HTTP_PORT', '8000') + '/v2/health/ready', timeout=4)"]

# SIGTERM is handled: the message in flight is finished or nak'd, never lost
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cvops.inference_router"]
