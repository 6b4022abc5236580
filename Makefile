# Meterline developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo serve test test-fast lint fuzz bench servers clean package gcp-setup gcp-local

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt shared/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e shared
	@touch $@

venv: $(STAMP) ## create .venv with the pinned dependencies and the meterline CLI

demo: $(STAMP) ## post a realistic LLM-gateway stream on the embedded backend and show what was counted
	$(VENV)/bin/meterline demo

serve: $(STAMP) ## run every function in one local server on http://127.0.0.1:8080 (embedded backend)
	$(VENV)/bin/meterline serve

servers: $(STAMP) ## check the gcloud emulators and install bqemulator/localstripe (and checkov) into venvs of their own
	$(PY) infra/servers.py check
	$(PY) infra/servers.py ensure-venvs
	$(PY) infra/servers.py ensure-checkov

package: $(STAMP) ## build one zip per function into build/ (named by content hash; refreshes functions/*/requirements.txt)
	$(PY) infra/package.py

gcp-setup: $(STAMP) ## create the topics, subscriptions, dataset, tables and views on the emulators [PUSH_ENDPOINT=url]
	$(PY) infra/gcp_setup.py $(if $(PUSH_ENDPOINT),--push-endpoint $(PUSH_ENDPOINT))

gcp-local: $(STAMP) ## the GCP backend on loopback: emulators, localstripe, the six functions and one router [PORT=8080]
	$(PY) infra/servers.py ensure-venvs
	$(PY) infra/servers.py gcp-local $(if $(PORT),--port $(PORT))

test: servers lint ## make lint, then the whole suite, starting the emulators, bqemulator and localstripe on loopback ports
	$(PY) -m pytest -q

LINT := .venv-lint
$(LINT)/.installed: infra/requirements-lint.txt
	@test -x $(LINT)/bin/python || $(PYTHON) -m venv $(LINT)
	$(LINT)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-lint.txt
	@touch $@

lint: $(STAMP) $(LINT)/.installed ## ruff (lint and import order), mypy on shared/meterline, and the layer rules (import-linter)
	$(LINT)/bin/ruff check .
	$(LINT)/bin/mypy --python-executable $(PY)
	cd shared && ../$(LINT)/bin/lint-imports --config ../.importlinter

test-fast: $(STAMP) ## run only the tests that need no local server
	$(PY) -m pytest -q -m "not servers"

fuzz: $(STAMP) ## fuzz every API route and method with 10,000 hypothesis cases per property (make test runs 150)
	METERLINE_FUZZ_EXAMPLES=$${METERLINE_FUZZ_EXAMPLES:-10000} $(PY) -m pytest -q tests/fuzz

bench: servers ## run the benchmarks and print their figures
	$(PY) bench/run.py

clean: ## remove the venvs and local data
	rm -rf $(VENV) .venv-bqemu .venv-localstripe .venv-checkov .venv-lint .meterline build
