# The verbs a user looks for: make demo, make test, make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data

.PHONY: demo test lint types pytest faults bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,sqlalchemy]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/async-store demo --data $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check async_store tests benchmarks examples
	$(BIN)/ruff format --check async_store tests benchmarks examples

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

test: lint types pytest

# The long fault runs: 200 crash-loop kills, 20 kills during migrations, 20 torn WALs, 10
# disk-full cycles, 4 processes x 4000 contending writes, 2,000 bad inputs per kind, and every
# other fault test once more; the figures are summed up from $(FAULTS_REPORT). The summary is
# printed whatever pytest's outcome (a failed run is when it is wanted), and the target fails
# when pytest did.
FAULT_ROUNDS ?= 200
FAULTS_REPORT := build/faults-report.jsonl
faults: $(STAMP)
	mkdir -p build
	rm -f $(FAULTS_REPORT)
	status=0; \
	ASYNC_STORE_FAULT_ROUNDS=$(FAULT_ROUNDS) ASYNC_STORE_FAULT_REPORT=$(CURDIR)/$(FAULTS_REPORT) \
		$(BIN)/python -m pytest -p no:cacheprovider tests/faults -q -rfExX --durations=15 \
		|| status=$$?; \
	$(BIN)/python -m tests.faults._workload summary $(FAULTS_REPORT) $$status; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache build dist
