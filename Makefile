# Two entry points for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck unit demo bench e2e clean

venv: $(STAMP)

# Pinned versions from requirements/lock.txt; the project itself is installed editable, no network
# resolution beyond the pinned wheels.
$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -m "not e2e"

test: lint typecheck
	$(VENV)/bin/pytest

e2e: venv
	$(VENV)/bin/pytest -m e2e

demo: venv
	$(PY) -m example_dags.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
