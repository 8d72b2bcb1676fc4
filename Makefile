# Two entry points for a fresh Debian machine (run as root): `make run` and `make test`.
# Every step is idempotent: a stamp file under .stamps/ records what is done.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMPS := .stamps
TORCH_PIN := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8765

.PHONY: setup setup-test run test lint typecheck train-default clean

$(STAMPS):
	@mkdir -p $(STAMPS)

$(STAMPS)/system: scripts/setup_system.sh | $(STAMPS)
	bash scripts/setup_system.sh
	@touch $@

$(STAMPS)/system-test: scripts/setup_system.sh | $(STAMPS)
	bash scripts/setup_system.sh --test
	@touch $@

# torch is installed first, pinned, so that nothing later pulls a CUDA build.
$(STAMPS)/venv: pyproject.toml $(STAMPS)/system
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[test]'
	@touch $@

$(STAMPS)/npm: $(STAMPS)/system
	@if [ -f web_client/package.json ]; then cd web_client && npm ci --no-audit --no-fund; fi
	@touch $@

$(STAMPS)/assets: $(STAMPS)/venv
	$(PY) -m models.face.facecap fetch
	@touch $@

setup: $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/assets

setup-test: setup $(STAMPS)/system-test

run: setup
	$(VENV)/bin/talker serve --host $(HOST) --port $(PORT)

# Reproduces models/weights/default.* from scratch: corpus -> teacher -> 8-step student -> eval.
train-default: setup
	$(PY) -m models.training.release --seed 0

test: setup-test
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check realtime models talker tests benchmarks

typecheck:
	$(VENV)/bin/mypy

clean:
	rm -rf $(STAMPS) $(VENV) assets
