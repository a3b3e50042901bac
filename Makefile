# thumbgen — every install step lives here, so a fresh Debian machine needs nothing done by hand.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run test bench bench-options syspkgs model clean

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
	$(BIN)/pip install -q -e '.[test,systemd]'
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

# bindfs: the network-share tests mount the inbox through FUSE (tests/e2e/test_shares.py)
test: setup $(PROMTOOL)
	$(MAKE) syspkgs EXTRA_SYS_DEPS=bindfs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(MAKE) syspkgs EXTRA_SYS_DEPS=libvips-tools
	$(BIN)/python bench/run.py

# Faster ways to run the local model, against the daemon's own (bench/model_options.py). Their
# packages (openvino, onnx) are not thumbgen's dependencies: they get a venv of their own.
OPTIONS_VENV := .venv-options
bench-options: model
	@[ -x $(OPTIONS_VENV)/bin/python ] || $(PYTHON) -m venv $(OPTIONS_VENV)
	$(OPTIONS_VENV)/bin/pip install -q -e . openvino onnx
	$(OPTIONS_VENV)/bin/python bench/model_options.py

clean:
	rm -rf $(VENV) $(OPTIONS_VENV) build *.egg-info
