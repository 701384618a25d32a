# cvops gateway: HTTP API (Litestar): users, roles, uploads, reads from its own projection.
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t cvops/gateway .
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
COPY services/gateway/ services/gateway/
RUN pip install -c requirements.lock ./contracts ./libs/domain ./libs/core ./services/gateway
# the web UI's scripts (HTMX), pinned by their package-lock.json, as ./justw installs them;
# npm is only needed for the install and leaves with it
ENV CVOPS_WEB_ASSETS=/opt/cvops/web-assets/node_modules
COPY services/gateway/web-assets/package.json services/gateway/web-assets/package-lock.json \
     /opt/cvops/web-assets/
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && npm ci --prefix /opt/cvops/web-assets --no-audit --no-fund --loglevel=error \
    && apt-get purge -y --auto-remove npm \
    && rm -rf /var/lib/apt/lists/* /root/.npm

RUN useradd --system --uid 10001 --home-dir /var/lib/cvops cvops \
    && mkdir -p /var/lib/cvops && chown cvops:cvops /var/lib/cvops
USER cvops
WORKDIR /var/lib/cvops
VOLUME ["/var/lib/cvops"]
EXPOSE 8080

# SIGTERM is handled: the message in flight is finished or nak'd, never lost
STOPSIGNAL SIGTERM
CMD ["python", "-m", "cvops.gateway"]
