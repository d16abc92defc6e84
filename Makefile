# Two commands matter: `make up` (run the serving cluster) and `make test`.
# Both depend on `make install`, which is a no-op when pyproject.toml is unchanged.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down test test-unit test-integration test-deps lint bench clean demo-bundles tools

install: $(STAMP) tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel on disk in pyproject; install it first on its
	# own so that no other requirement can resolve a CUDA build instead.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

# wrk is the load generator of every benchmark: `bench peers` refuses to run without
# it (figures from different generators do not compare), the others fall back to the
# project's own aiohttp client.
tools:
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (HTTP load generator of the benchmarks)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
	  || echo "could not install wrk: the benchmarks need it (apt-get install wrk)"; }

demo-bundles: install
	$(BIN)/serve-ml bundle demo --if-missing

up: install demo-bundles
	$(BIN)/serve-ml up

down: install
	$(BIN)/serve-ml down

# Mosquitto is the real MQTT broker the stream tests start on a free port; Debian's
# chromium and its driver run the portal's browser tests (browser downloads from
# elsewhere do not work on these machines).
test-deps:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  echo "installing mosquitto (MQTT broker used by the tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { \
	  echo "installing chromium and chromium-driver (browser tests of the portal)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Static checks: ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy.
lint: install
	$(BIN)/ruff check serve_ml tests
	$(BIN)/mypy

# Every tier runs in a random order, from one seed printed first: `make test SEED=N`
# repeats an order. Tests that start a Ray cluster of their own run in a pytest
# process of their own: one process can be the driver of one cluster only, and the
# other tiers share one real cluster for the whole session.
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
RANDOM_ORDER = -p randomly --randomly-seed=$(SEED)
CLUSTER_TIERS := tests/integration tests/e2e tests/faults

test: install test-deps lint
	@echo "test order: seed $(SEED) (repeat with: make test SEED=$(SEED))"
	$(BIN)/python -m pytest -q $(RANDOM_ORDER) tests/unit
	$(BIN)/python -m pytest -q --durations=15 $(RANDOM_ORDER) -m "not own_cluster" $(CLUSTER_TIERS)
	$(BIN)/python -m pytest -q --durations=0 $(RANDOM_ORDER) -m own_cluster $(CLUSTER_TIERS)

test-unit: install
	$(BIN)/python -m pytest -q $(RANDOM_ORDER) tests/unit

test-integration: install test-deps
	$(BIN)/python -m pytest -q $(RANDOM_ORDER) -m "not own_cluster" tests/integration

bench: install
	$(BIN)/serve-ml bench all

clean:
	rm -rf $(VENV) .serve-ml
