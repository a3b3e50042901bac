# thumbgen — every install step lives here, so a fresh Debian machine needs nothing done by hand.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSPKGS_STAMP := $(VENV)/.syspkgs
PYTEST_ARGS ?=

.PHONY: setup run test bench syspkgs model clean

# Debian packages: systemd-python compiles against libsystemd (pkg-config finds it); systemd-analyze
# checks the unit file; vipsthumbnail is the benchmark's reference. Installed only when missing, as root.
SYS_DEPS := libsystemd-dev pkg-config systemd
syspkgs:
	@missing=""; for p in $(SYS_DEPS) $(EXTRA_SYS_DEPS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(MAKE) syspkgs
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

test: setup $(PROMTOOL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(MAKE) syspkgs EXTRA_SYS_DEPS=libvips-tools
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
