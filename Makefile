# Only python3 is assumed: everything else is installed into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.local/dagster_home

.PHONY: run test test-fast test-deployment image base-image dev lint bench db-test alma-test clean

LOG_DIR := .local/logs

run: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml ## the whole load on the embedded defaults
	@mkdir -p $(LOG_DIR)
	@log=$(LOG_DIR)/run-$$(date -u +%Y%m%dT%H%M%SZ).log; \
	echo "Loading the embedded warehouse into the embedded bucket; full log: $$log"; \
	$(BIN)/dagster asset materialize -m patronload_assets --select '*' > "$$log" 2>&1; \
	status=$$?; \
	$(BIN)/python -m patronload_assets.reports.summary || status=1; \
	echo "Full log: $$log"; \
	exit $$status

# Four workers on two cores (pytest-xdist): the daemon tests mostly wait on sensor ticks (the
# longest, the overdue test, waits out a schedule and a deadline for about 4.5 minutes), and each
# of the longest starts first on a worker of its own (conftest.py orders them first; loadgroup hands
# out one test at a time, where load would hand the first 30 to one worker). The commands run from
# the project root take turns (a lock in test_cli.py). The slowest 15 print at the end, so the next
# slow test is seen the day it lands. Measured here with nothing else running: 383 s with three
# workers, 337 s with four.
PYTEST_PARALLEL := -n $${PYTEST_WORKERS:-4} --dist loadgroup --durations=15

test: $(VENV)/.installed-test $(VENV)/.installed-dev ## install the test extra and run the tests
	$(BIN)/ruff check patronload_assets patronload_assets_tests
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not deployment" patronload_assets_tests

# What it ships, run as it ships: the image built and loading as its own user, every run a container
# of it, the shipped IAM policy on an S3 that enforces it, the read-only UI. Needs podman (or docker)
# and, where no base image can be pulled, mmdebstrap; one test at a time, as they share the image.
test-deployment: $(VENV)/.installed-test $(VENV)/.installed-dev ## the image, runs as containers, IAM, the read-only UI
	$(BIN)/pytest -p no:xdist --durations=10 -m deployment patronload_assets_tests

image: ## build the deployment's image with docker or podman (IMAGE=patronload:latest, BASE_IMAGE)
	sh deploy/image/build.sh

base-image: ## a stand-in for python:3.11-slim-bookworm from Debian's packages (needs mmdebstrap)
	sh deploy/image/base-image.sh

test-fast: $(VENV)/.installed-test ## the domain and unit tests: no daemon, server or command line
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow" patronload_assets_tests

dev: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml ## web UI and daemon on localhost:3000
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: $(VENV)/.installed-test $(VENV)/.installed-dev ## build rate, and the whole lineage on N patrons per type (N=200000)
	$(BIN)/python -m patronload_assets_tests.bench --lineage $${N:-200000} $(BENCH_ARGS)

db-test: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml ## connect to the warehouse, log its version
	$(BIN)/dagster job execute -m patronload_assets -j warehouse_connection_test

alma-test: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml ## read Alma's SIS job and its last runs (the key's first day)
	@if [ -z "$$ALMA_API_KEY" ]; then echo "set ALMA_API_KEY and ALMA_SIS_JOB_ID (or ALMA_SIS_PROFILE_ID) first" >&2; exit 2; fi
	$(BIN)/dagster job execute -m patronload_assets -j alma_connection_test

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check patronload_assets patronload_assets_tests
	$(BIN)/ruff format --check patronload_assets patronload_assets_tests

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-dev: setup.py | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.installed-test: setup.py | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

clean:
	rm -rf .local
