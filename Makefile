# ocimirror: `make test` and `make demo` work on a fresh Debian machine (run as root, or with sudo).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PostgreSQL server the tests use (trust auth); every test gets a fresh database in it.
export OCIMIRROR_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
# System packages the tests drive as real peers.
APT_PACKAGES := skopeo docker-registry gnupg postgresql-client docker.io podman busybox-static

.PHONY: help install bytecode system-deps services test lint demo clean

help:
	@echo "make test   - install everything needed and run the whole suite"
	@echo "make demo   - install and run the mirror-and-host workflow offline"
	@echo "make lint   - ruff and mypy"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

install: $(VENV)/.installed

# Byte-code for the package, as an installed wheel has it (an editable install under
# PYTHONDONTWRITEBYTECODE would compile every module in every process the tests start).
bytecode: install
	$(PY) -m compileall -q ocimirror > /dev/null

system-deps:
	@bash scripts/system-deps.sh $(APT_PACKAGES)

services:
	@bash scripts/services.sh

lint: install
	$(VENV)/bin/ruff check ocimirror tests examples benchmarks
	$(VENV)/bin/ruff format --check ocimirror tests examples benchmarks
	$(VENV)/bin/mypy

test: install bytecode system-deps services lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

demo: install bytecode
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
