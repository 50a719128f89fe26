# Two commands for a newcomer: `make demo` (sandbox cutover) and `make test` (everything CI runs).
# Both set themselves up on a fresh machine: .venv, pip, npm ci for the CDK CLI.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# jsii prints an end-of-life banner for Node 20 (harmless); it reads this variable: a list of the major
# versions to keep quiet about (the older JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION no longer works).
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
ENVS := $(basename $(notdir $(wildcard config/*.yaml)))

.PHONY: test demo lint unit synth cfn-lint bench loadtest clean setup deploy import require-env

setup: $(VENV)/.installed node_modules/.installed

# PYTHONWARNINGS: setuptools' editable-install notice (a warning about our own folders) is noise here.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[dev]'
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

# The real account (README: "Adopting the live account"). The guard refuses, one line per problem,
# while config/$(ENV).yaml holds CHANGE-ME placeholders or differs from the live gateway parameter;
# only then does CDK touch the account. Credentials: the boto3 chain (AWS_PROFILE), as cdk's.
deploy: require-env setup
	$(PY) -m cutover.deploy_guard --env $(ENV)
	npx cdk deploy BrainstormRouter-$(ENV) $(CDK_ARGS)

import: require-env setup
	$(PY) -m cutover.deploy_guard --env $(ENV)
	npx cdk import BrainstormRouter-$(ENV) $(CDK_ARGS)

require-env:
	@test -n "$(ENV)" || { echo "usage: make deploy|import ENV=<one of: $(ENVS)>" >&2; exit 2; }

demo: $(VENV)/.installed
	$(PY) -m cutover mtls --strict --sandbox --yes $(ARGS)

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

# Open-model load test (R20's profile by default), e.g. ARGS="--sandbox --pool 50" (docs/load-test/README.md)
loadtest: $(VENV)/.installed
	$(PY) -m loadtest $(ARGS)

clean:
	rm -rf cdk.out .pytest_cache reports
