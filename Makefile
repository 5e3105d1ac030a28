# robofy-etl developer commands. `make help` lists them.
# Everything runs from .venv, which `make install` creates from scratch with pinned versions.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export UV_COMPILE_BYTECODE := 1
export DAGSTER_HOME := $(CURDIR)/dagster_home
# The extras the venv gets: the dev tools, and PostgreSQL (its tests run in CI).
# deploy/Dockerfile installs the same minus dev (tests/deploy checks it).
EXTRAS := dev,postgres

.PHONY: help install demo test lint dev simulator test-live bench bench-client bench-sync bench-floor bench-queries bench-load bench-history bench-pg docs clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install robofy-etl with pinned dependencies

demo: $(STAMP) ## run the whole pipeline on the built-in simulator (last 14 days) into data/robofy.duckdb
	$(BIN)/robofy-etl demo

test: lint ## lint and type-check, then run the test suite (simulator over loopback HTTP, real DuckDB files, real Dagster runs)
	$(BIN)/python -m pytest -q --numprocesses=auto --maxprocesses=4

test-live: $(STAMP) ## read-only checks against the real API (needs ROBOFY_API_KEY; never in CI)
	$(BIN)/pytest -m live tests/live

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check robofy_etl tests benchmarks scripts
	$(BIN)/ruff format --check robofy_etl tests benchmarks scripts
	$(BIN)/mypy

dev: $(STAMP) ## the Dagster UI on the demo data, against the simulator (http://127.0.0.1:3000)
	$(BIN)/robofy-etl dev --simulator

simulator: $(STAMP) ## serve the built-in Robofy API on http://127.0.0.1:8787
	$(BIN)/robofy-etl simulator --port 8787 --scale medium --seed 1

bench: bench-client bench-sync bench-floor bench-queries ## run all benchmarks

bench-client: $(STAMP) ## client throughput vs. the latency bound (1/4/16/64 in flight)
	$(BIN)/python benchmarks/bench_client.py

bench-sync: $(STAMP) ## full and incremental robofy-etl sync of the medium dataset
	$(BIN)/python benchmarks/bench_sync.py

bench-floor: $(STAMP) ## the shortest a full sync can take here (minimal client, Dagster start)
	$(BIN)/python benchmarks/bench_floor.py

bench-queries: $(STAMP) ## dashboard and analyst queries on the synced medium dataset
	$(BIN)/python benchmarks/bench_queries.py

bench-load: $(STAMP) ## warehouse slice-replace throughput
	$(BIN)/python benchmarks/bench_load.py

bench-pg: $(STAMP) ## the medium sync into PostgreSQL beside DuckDB, and PostgreSQL load rows/s
	$(BIN)/python benchmarks/bench_sync.py --warehouse both
	$(BIN)/python benchmarks/bench_pg_load.py

bench-history: $(STAMP) ## the hourly run on 14, 90 and 365 days of a large account's history (QUICK=1: 3 and 14)
	$(BIN)/python benchmarks/bench_history.py $(if $(QUICK),--quick)

docs: $(STAMP) ## regenerate docs/tables.md, the README's settings table and .env.example
	$(BIN)/python scripts/gen_tables_doc.py
	$(BIN)/python scripts/gen_settings_doc.py

clean: ## remove the venv, data and Dagster run state
	rm -rf $(VENV) data dagster_home/storage dagster_home/history dagster_home/logs dagster_home/schedules dagster_home/.telemetry
