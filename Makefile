# sbw-clickstream-ops — every entry point an operator or developer needs.
# `make demo` and `make test` install what they need (apt packages, the venv) idempotently.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
PY := $(BIN)/python
CACHE := $(CURDIR)/.cache
APT_PACKAGES := $(shell grep -v '^\s*\#' .ci/apt-packages.txt | grep -v '^\s*$$')
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help deps apt venv lint ruff yamllint ansible-lint cfn-lint checkov pytest molecule test test-fast bench demo demo-down cost lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: apt venv ## install apt packages and the pinned venv

apt: $(CACHE)/apt.stamp
$(CACHE)/apt.stamp: .ci/apt-packages.txt
	@mkdir -p $(CACHE)
	@if [ "$$(id -u)" -ne 0 ]; then echo "deps: run as root (apt-get install)" >&2; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml $(CACHE)/apt.stamp
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

lock: ## re-resolve requirements.in into requirements.lock
	rm -rf $(CACHE)/lockvenv && python3 -m venv $(CACHE)/lockvenv
	$(CACHE)/lockvenv/bin/pip install -q -r requirements.in
	$(CACHE)/lockvenv/bin/pip freeze --exclude-editable > requirements.lock

lint: ruff yamllint ansible-lint cfn-lint checkov ## all lint gates

ruff: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

yamllint: venv
	$(BIN)/yamllint --strict .

ansible-lint: venv
	$(BIN)/ansible-lint --offline --profile production

cfn-lint: venv
	@if compgen -G "cloudformation/*.yaml" >/dev/null; then $(BIN)/cfn-lint cloudformation/*.yaml; else echo "cfn-lint: no templates yet"; fi

checkov: venv ## checkov over cloudformation/ (.checkov.yaml; suppressions are inline, each with its reason)
	$(BIN)/checkov --config-file .checkov.yaml

pytest: venv
	$(BIN)/pytest -n 2 --dist loadfile

# Every molecule/<scenario>/ (molecule/shared holds the create/destroy playbooks they share).
MOLECULE_SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
molecule: venv apt ## molecule test of every role scenario (boots nspawn hosts; root)
	for s in $(MOLECULE_SCENARIOS); do molecule test -s $$s; done

test: deps lint pytest molecule ## everything the project checks (what CI runs)

test-fast: venv ## the inner loop: unit tests only (no root, no servers, no network; markers in tests/conftest.py)
	$(BIN)/pytest -q -n 2 -m unit

cost: venv ## monthly AWS cost (ap-southeast-1) at 10/100/1,000 requests/s, batches of 1 and 20
	$(PY) -m sbw_ops.cost

bench: deps ## benchmarks: figures as ratios to a baseline measured in the same run
	$(PY) -m benchmarks

demo: deps ## bring up the local platform and show it working
	$(PY) -m sbw_ops.platform up

demo-down: venv ## stop and remove everything the demo started
	$(PY) -m sbw_ops.platform down

clean: demo-down
	rm -rf $(CACHE) build
