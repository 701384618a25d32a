# cvops trainer: genetic-algorithm tuning: generation coordinator and trial worker.
# Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t cvops/trainer .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CVOPS_HOME=/var/lib/cvops \
    CVOPS_METRICS_HOST=0.0.0.0

WORKDIR /src
# every third-party version pinned, as ./justw installs them
COPY requirements.lock ./
# torch alone first: the heaviest layer stays cached while the sources change.
# On Linux x86_64 PyPI's torch is the CUDA build (runs on CPU-only hosts too).
RUN pip install -c requirements.lock torch numpy

# the workspace members this service needs (contracts and core come first)
COPY contracts/ contracts/
COPY libs/domain/ libs/domain/
COPY libs/core/ libs/core/
COPY libs/vision/ libs/vision/
COPY libs/engines/ libs/engines/
COPY services/trainer/ services/trainer/
RUN pip install -c requirements.lock ./contracts ./libs/domain ./libs/core ./libs/vision ./libs/engines ./services/trainer

RUN useradd --system --uid 10001 --home-dir /var/lib/cvops cvops \
    && mkdir -p /var/lib/cvops && chown cvops:cvops /var/lib/cvops
USER cvops
WORKDIR /var/lib/cvops
VOLUME ["/var/lib/cvops"]
EXPOSE 9102

# SIGTERM is handled: the message in flight is finished or nak'd, never lost
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cvops.trainer"]
