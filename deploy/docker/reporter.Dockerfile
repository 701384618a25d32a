# cvops reporter: one report per model version (data set, GA search, conversions, benchmarks,
# deployment) with Altair charts rendered by vl-convert (no browser), rebuilt as results arrive.
# Build from the repository root:
#   docker build -f deploy/docker/reporter.Dockerfile -t cvops/reporter .
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
# the workspace members this service needs (contracts and core come first)
COPY contracts/ contracts/
COPY libs/domain/ libs/domain/
COPY libs/core/ libs/core/
COPY services/reporter/ services/reporter/
RUN pip install -c requirements.lock ./contracts ./libs/domain ./libs/core ./services/reporter

RUN useradd --system --uid 10001 --home-dir /var/lib/cvops cvops \
    && mkdir -p /var/lib/cvops && chown cvops:cvops /var/lib/cvops
USER cvops
WORKDIR /var/lib/cvops
VOLUME ["/var/lib/cvops"]
EXPOSE 9105

# SIGTERM is handled: the message in flight is finished or nak'd, never lost
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cvops.reporter"]
