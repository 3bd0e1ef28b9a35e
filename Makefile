# The two commands a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo test lint typecheck unit services soak bench docs clean

# (Re)create the virtual environment when it is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## help: this list of targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## demo: the example JSON processor reads the bundled stream through stdin, with an SQLite DLQ
demo: $(STAMP)
	rm -rf .demo && mkdir -p .demo
	$(PY) examples/json_processor.py .demo/dlq.db < examples/sample_messages.jsonl

## test: ruff, mypy --strict, then pytest (brokers are started if they are down)
test: lint typecheck services unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict missive

unit: $(STAMP)
	$(VENV)/bin/pytest

## soak: the fault-injection suite with 100,000 messages a scenario (long)
soak: services $(STAMP)
	MISSIVE_FAULT_N=$${MISSIVE_FAULT_N:-100000} $(VENV)/bin/pytest -m faults tests/faults

## services: start each local broker the tests use, leaving a running one alone
services:
	@.ci/services

## bench: every benchmark; figures go in bench/README.md by hand
bench: services $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) bench/dispatch.py
	$(PY) bench/brokers.py
	$(PY) bench/brokers_nats.py
	$(PY) bench/brokers_mqtt.py
	$(PY) bench/concurrency.py
	$(PY) bench/retries.py
	$(PY) bench/dlq.py
	$(PY) bench/wsgi.py

## docs: the user guide as HTML in docs/_build/html, warnings as errors
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

## clean: remove the virtual environment, the demo output and the caches
clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
