# The two commands README names: `make serve` (the service, lab mode) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Node packages for the local test servers (cosmosdb-server): tests/servers/package.json.
SERVERS    := tests/servers
NODE_STAMP := $(SERVERS)/node_modules/.installed

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# `npm ci` when node_modules is missing or the lock changed. Without npm the suite still
# runs: the tests that need cosmosdb-server skip, or fail where CI=true.
$(NODE_STAMP): $(SERVERS)/package.json $(SERVERS)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(SERVERS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm not found: the tests that need cosmosdb-server will skip" >&2; \
	fi

serve: $(STAMP)
	$(BIN)/engines serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(NODE_STAMP)
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$status

bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python benchmarks/bench_lab.py
	$(BIN)/python benchmarks/bench_domains.py
	$(BIN)/python benchmarks/bench_telemetry.py
	$(BIN)/python benchmarks/bench_cloud.py
	$(BIN)/python benchmarks/bench_kafka.py
	$(BIN)/python benchmarks/bench_rebuild.py

clean:
	rm -rf $(VENV) $(SERVERS)/node_modules .engines .pytest_cache .mypy_cache .ruff_cache
