# cvops trainer, GPU build: genetic-algorithm tuning: generation coordinator and trial worker.
# CUDA torch and onnxruntime-gpu; the CPU image is deploy/docker/trainer.Dockerfile.
# Build from the repository root (deploy/compose.gpu.yml does):
#   docker build -f deploy/docker/gpu/trainer.Dockerfile -t cvops/trainer-gpu .

# -- build: a virtual environment with the pinned third-party packages and the workspace
# members this service needs, installed (not editable); the runtime stage copies only it
# (Debian 12: its CPython runs on the Ubuntu 24.04 runtime below, glibc 2.36 <= 2.39)
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# every third-party version pinned, as ./justw installs them (pip itself too)
COPY requirements.lock ./
RUN pip install -c requirements.lock pip
# torch alone first: the heaviest layer stays cached while the sources change. PyPI's Linux
# wheel of torch==2.13.0 is the CUDA 13 build; it brings cuDNN, cuBLAS, NCCL... as wheels
RUN pip install -c requirements.lock torch
# the workspace members this service needs (contracts and core come first)
COPY contracts/ contracts/
COPY libs/domain/ libs/domain/
COPY libs/core/ libs/core/
COPY libs/vision/ libs/vision/
COPY libs/engines/ libs/engines/
COPY services/trainer/ services/trainer/
RUN pip install -c requirements.lock --build-constraint requirements.lock \
    ./contracts ./libs/domain ./libs/core ./libs/vision ./libs/engines ./services/trainer
# ONNX Runtime with the CUDA execution provider in place of the CPU build
# (one package provides the `onnxruntime` module): onnxruntime-gpu 1.31.1 is the newest on
# PyPI and the lock's onnxruntime 1.32.0 has no GPU build; both use CUDA 13, as torch does
RUN pip uninstall -y onnxruntime \
    && pip install -c requirements.lock onnxruntime-gpu==1.31.1

# -- runtime: NVIDIA's CUDA base (the driver's forward-compatibility libraries and the
# NVIDIA_* settings the container toolkit reads; the CUDA libraries come with torch's
# wheels, so the -runtime/-cudnn flavours would only add a second copy) plus the build
# stage's CPython 3.11 (/usr/local), the interpreter the lock was resolved for (Ubuntu
# 24.04 ships 3.12), with the shared libraries it links
FROM nvidia/cuda:13.0.2-base-ubuntu24.04
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       ca-certificates libbz2-1.0 libexpat1 libffi8 liblzma5 libncursesw6 libreadline8t64 \
       libsqlite3-0 libssl3t64 libuuid1 zlib1g libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local /usr/local
RUN ldconfig
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
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
