# Two commands for a newcomer: `make demo` (sandbox cutover) and `make test` (everything CI runs).
# Both set themselves up on a fresh machine: .venv, pip, npm ci for the CDK CLI.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
ENVS := $(basename $(notdir $(wildcard config/*.yaml)))

.PHONY: test demo lint unit synth cfn-lint bench loadtest clean setup

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup lint unit synth cfn-lint

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

unit: $(VENV)/.installed
	$(PY) -m pytest

synth: setup
	rm -rf cdk.out
	npx cdk synth --quiet
	npx cdk list

cfn-lint: $(VENV)/.installed
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

demo: $(VENV)/.installed
	$(PY) -m cutover mtls --strict --sandbox --yes $(ARGS)

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

# Open-model load test (R20's profile by default), e.g. ARGS="--sandbox --pool 50" (docs/load-test/README.md)
loadtest: $(VENV)/.installed
	$(PY) -m loadtest $(ARGS)

clean:
	rm -rf cdk.out .pytest_cache reports
