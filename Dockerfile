# syntax=docker/dockerfile:1
# jq server image: a builder stage turns the project and its dependencies into wheels, and a
# slim runtime stage installs them offline (no compiler, no build tools, no pip cache) and runs
# `jq serve` as an unprivileged user with the WAL on the /data volume.
#
#   docker build -t jq .
#   docker run -p 8080:8080 -v jq-data:/data -e REDIS_URL=redis://host:6379/0 jq

# ---- builder: wheels for jq-tool and everything it depends on ------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is built from; .dockerignore keeps venvs, data and caches out.
# README.md* (a glob) so a checkout without the README still builds.
COPY pyproject.toml README.md* ./
COPY jq_tool ./jq_tool
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# --no-index: the runtime installs exactly the wheels the builder resolved, nothing newer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels /wheels/jq_tool-*.whl

# etcd for cluster mode (CLUSTER_MODE=true): each jq node starts its own member beside it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "etcd-server=3.4.23-*" \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid so a host-mounted /data can be chowned to match.
RUN groupadd --system --gid 10001 jq \
    && useradd --system --uid 10001 --gid jq --home-dir /home/jq --create-home jq \
    && mkdir -p /data \
    && chown jq:jq /data

# Anything written to /data after VOLUME would be discarded, so ownership is settled above.
VOLUME /data
ENV WAL_DIR=/data \
    PORT=8080

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/jq
EXPOSE 8080

# The slim image has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/health', timeout=4)"]

CMD ["jq", "serve", "--host", "0.0.0.0"]
