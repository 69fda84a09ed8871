# The two commands README names: `make serve` (the service, lab mode) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/engines serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$status

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lab.py
	$(BIN)/python benchmarks/bench_domains.py
	$(BIN)/python benchmarks/bench_telemetry.py

clean:
	rm -rf $(VENV) .engines .pytest_cache .mypy_cache .ruff_cache
