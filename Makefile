# thumbgen — every install step lives here, so a fresh Debian machine needs nothing done by hand.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist processes for make test (TEST_JOBS=0: one process)
TEST_JOBS ?= 2

.PHONY: setup run test bench soak bench-options contact-sheet syspkgs model clean image test-image screenshot

# Debian packages, installed only when missing and running as root (named otherwise): see
# tools/syspkgs.sh. They come first: creating the venv itself may need pythonX.Y-venv.
syspkgs:
	@tools/syspkgs.sh $(PYTHON) $(EXTRA_SYS_DEPS)

$(BIN)/python:
	@tools/syspkgs.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@tools/syspkgs.sh $(PYTHON)
	$(BIN)/pip install -q -e '.[test,systemd,openvino]'
	touch $@

model: $(STAMP)
	$(BIN)/thumbgen models fetch

setup: $(STAMP) model

run: setup
	THUMBGEN_REMOVAL_BACKEND=$${THUMBGEN_REMOVAL_BACKEND:-local} $(BIN)/thumbgen run

# promtool checks the alert rules (those tests skip without it). It is taken out of Debian's
# prometheus package without installing the package, which would add a user and start a server.
PROMTOOL := $(BIN)/promtool
$(PROMTOOL): | $(BIN)/python
	@tmp=$$(mktemp -d); \
	if (cd $$tmp && { apt-get download prometheus >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	      && apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } \
	    && dpkg-deb -x prometheus_*.deb root) && install -m 0755 $$tmp/root/usr/bin/promtool $@; \
	then echo "promtool: $@"; else echo "promtool unavailable: its tests are skipped" >&2; fi; \
	rm -rf $$tmp

# The shop's page is tested in a real browser: Debian's chromium and chromium-driver; bindfs:
# the network-share tests mount the inbox through FUSE (tests/e2e/test_shares.py).
BROWSER_PKGS := chromium chromium-driver

test: setup $(PROMTOOL)
	$(MAKE) syspkgs EXTRA_SYS_DEPS="$(BROWSER_PKGS) bindfs"
	$(BIN)/python -m pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

# rembg, the peer `thumbgen process` is measured against (bench/peer.py), gets a venv of its own:
# never one of thumbgen's dependencies. Its model is thumbgen's u2netp.onnx (nothing downloaded).
REMBG_VENV := .venv-rembg
bench: setup
	$(MAKE) syspkgs EXTRA_SYS_DEPS=libvips-tools
	@[ -x $(REMBG_VENV)/bin/rembg ] || { $(PYTHON) -m venv $(REMBG_VENV) && \
		$(REMBG_VENV)/bin/pip install -q "rembg[cpu,cli]"; }
	$(BIN)/python bench/run.py

# An hour of the real daemon under a drip of one file a second, with a remote that fails now and
# then: RSS, fds, threads, temp files, queue every 5 minutes; RSS slope; nothing lost
# (bench/soak.py). A benchmark, not a test. SOAK_MINUTES=6 make soak for a short one.
SOAK_MINUTES ?= 60
soak: setup
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

# docs/presets.png: every preset of the sample photos, made by the real pipeline and local model
contact-sheet: setup
	$(BIN)/python bench/contact_sheet.py


# docs/status-page.png: the shop's page over the sample photos, taken by headless Chromium.
screenshot: setup
	$(MAKE) syspkgs EXTRA_SYS_DEPS="$(BROWSER_PKGS)"
	$(BIN)/python tools/screenshot.py docs/status-page.png

# Ways to run the local model that thumbgen does not ship (bench/model_options.py: int8, smaller
# inputs); OpenVINO f32/bf16 is LOCAL_RUNTIME's and `make bench` measures it. onnx is not one of
# thumbgen's dependencies: it gets a venv of its own.
OPTIONS_VENV := .venv-options
bench-options: model
	@[ -x $(OPTIONS_VENV)/bin/python ] || $(PYTHON) -m venv $(OPTIONS_VENV)
	$(OPTIONS_VENV)/bin/pip install -q -e '.[openvino]' onnx
	$(OPTIONS_VENV)/bin/python bench/model_options.py

# The container image (Dockerfile), built and tested with podman, or docker where that is what
# the machine has: tools/podman.sh holds the engine's flags and installs podman, runc, debootstrap
# and podman-compose when missing (as root; named otherwise). No image registry is reachable from
# our machines, so the base the FROM line names is made once from Debian's packages and cached.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE := localhost/thumbgen
BASE_IMAGE := $(shell sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile | head -n 1)
IMAGE_MAX_MB := 450

image:
	@tools/podman.sh setup
	@tools/podman.sh base $(BASE_IMAGE)
	@tools/podman.sh build-image $(IMAGE):$(VERSION) $(IMAGE):latest
	@tools/podman.sh image-size $(IMAGE):$(VERSION) $(IMAGE_MAX_MB)

# Runs the image as a user would (tests/image/, left out of `make test`): a read-only root,
# the data folder bind-mounted, photos dropped on the host, stop, exec, compose.
test-image: image setup
	THUMBGEN_IMAGE=$(IMAGE):$(VERSION) THUMBGEN_IMAGE_MAX_MB=$(IMAGE_MAX_MB) \
	  $(BIN)/python -m pytest -m image tests/image $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OPTIONS_VENV) build *.egg-info
