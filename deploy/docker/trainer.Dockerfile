# cvops trainer: genetic-algorithm tuning: generation coordinator and trial worker.
# Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t cvops/trainer .
# GPU hosts: deploy/docker/gpu/trainer.Dockerfile (CUDA torch, onnxruntime-gpu)

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
# torch alone first: the heaviest layer stays cached while the sources change. PyTorch's
# CPU index: the lock pins 2.13.0 without a local label, which the +cpu build satisfies;
# PyPI's Linux wheel is the CUDA build and brings ~5 GB of CUDA libraries no CPU host uses
RUN pip install -c requirements.lock torch \
    --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
# the workspace members this service needs (contracts and core come first)
COPY contracts/ contracts/
COPY libs/domain/ libs/domain/
COPY libs/core/ libs/core/
COPY libs/vision/ libs/vision/
COPY libs/engines/ libs/engines/
COPY services/trainer/ services/trainer/
RUN pip install -c requirements.lock --build-constraint requirements.lock \
    ./contracts ./libs/domain ./libs/core ./libs/vision ./libs/engines ./services/trainer

# -- runtime: the slim Python, the venv, an unprivileged user
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    CVOPS_HOME=/var/lib/cvops \
    CVOPS_METRICS_HOST=0.0.0.0
RUN useradd --system --uid 10001 --home-dir /var/lib/cvops cvops \
    && mkdir -p /var/lib/cvops && chown cvops:cvops /var/lib/cvops
COPY --from=build /opt/venv /opt/venv
USER cvops
WORKDIR /var/lib/cvops
VOLUME ["/var/lib/cvops"]
EXPOSE 9102

# healthy while its health endpoint answers 2xx (cvops.core.services); python's urllib, so
# the image needs no curl
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CVOPS_TRAINER_METRICS_PORT', '9102') + '/metrics', timeout=4)"]

# SIGTERM is handled: the message in flight is finished or nak'd, never lost
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cvops.trainer"]
