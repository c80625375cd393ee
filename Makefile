# Two entry points for a fresh machine with Python 3.11+ and make: `make demo` and `make test`;
# `make check` is the quick inner loop.
PYTHON ?= python3
VENV := .venv
# The Airflow lines the suite also runs on besides the newest (3.3, in .venv): one venv each.
OLDER_LINES := 3.0 3.1 3.2
# What runs on them: the client, hook, waiting, operator, sensor, trigger, listener and example-DAG suites
# (the end-to-end tests, the emulator's own tests, the properties and make demo's run on the newest line),
# and the end-to-end deferred wait on 3.0.
LINE_SUITES := tests/client tests/hooks tests/waiting tests/operators tests/sensors tests/triggers tests/test_plugin.py \
	tests/examples/test_example_dags.py tests/test_dag_harness.py
OLDEST_E2E := tests/e2e/test_deferred_waits.py
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Every venv is built by uv (from PyPI, pinned, in a venv of its own): it installs the same pinned
# locks as pip, in seconds instead of minutes.
UV_VERSION := 0.13.9
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
# Builds the venv $(1) from the lock $(2), then installs the project into it, editable.
define build_venv
	$(UV) venv --quiet --clear --python $(PYTHON) $(1)
	$(UV) pip install --quiet --python $(1) -r $(2)
	$(UV) pip install --quiet --python $(1) --no-deps --no-build-isolation -e .
endef

# pytest-xdist: four workers, two per core of the CI machine, because most tests spend their time
# waiting on a server, a clock or a subprocess, not on the CPU (at two workers the cores sat half idle).
# Each worker has an Airflow home and SQLite database of its own (tests/conftest.py); the tests of a
# shared fixture (the end-to-end tests' Airflow stack, the CLI runs) go to one worker as one unit
# (tests/worker_groups.py), while the other workers run the rest.
WORKERS ?= 4
XDIST := -n $(WORKERS) --dist loadgroup

.PHONY: venv check check-pythons test test-newest older-venvs lint typecheck integration demo bench docs e2e e2e-cluster cluster-packages clean test-lines $(foreach line,$(OLDER_LINES),test-airflow-$(line))

venv: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Pinned versions from requirements/lock.txt; the project itself is installed editable, no network
# resolution beyond the pinned wheels.
$(STAMP): requirements/lock.txt pyproject.toml | $(UV)
	$(call build_venv,$(VENV),requirements/lock.txt)
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

# The inner loop: lint, types, and the fast tier (tests that need no server, no process and no Airflow
# database: `-m unit`, selected and guarded by tests/fast_tier.py).
check: lint typecheck
	$(VENV)/bin/pytest -m unit -q

# The fast tier on the other Pythons the package supports (.venv is 3.11): a venv each, .venv-py3.12 and
# .venv-py3.13, from the same lock. The interpreter is python3.X on the PATH, else pyenv's.
OTHER_PYTHONS := 3.12 3.13
python_for = $(shell command -v python$(1) >/dev/null 2>&1 && python$(1) -c 'print(1)' >/dev/null 2>&1 && echo python$(1) || echo $$(pyenv prefix $$(pyenv latest $(1)) 2>/dev/null)/bin/python$(1))

check-pythons:
	$(foreach v,$(OTHER_PYTHONS),$(MAKE) check PYTHON=$(call python_for,$(v)) VENV=.venv-py$(v) &&) true

# The newest line's suite without the end-to-end tests: DAG runs with dag.test() against the emulator,
# the emulator's own tests, the properties, make demo's tests.
integration: venv
	$(VENV)/bin/pytest $(XDIST) -m "not e2e"

# The whole gate: lint, types, the whole suite on the newest line, then the older lines' suites.
test: lint typecheck
	$(MAKE) test-newest
	$(MAKE) test-lines

test-newest: venv
	$(VENV)/bin/pytest $(XDIST) --durations=10

older-venvs: $(foreach line,$(OLDER_LINES),.venv-airflow-$(line)/.installed)

# The older Airflow lines, from requirements/lock-airflow-X.txt (Airflow's constraint files are not
# reachable here: each lock was resolved once and frozen, with the pins of its era).
.venv-airflow-%/.installed: requirements/lock-airflow-%.txt pyproject.toml | $(UV)
	$(call build_venv,.venv-airflow-$*,requirements/lock-airflow-$*.txt)
	touch $@

# On 3.0 the end-to-end deferred wait runs in the same pytest run, on one worker, beside the suites.
LINE_E2E_3.0 := $(OLDEST_E2E)
$(foreach line,$(OLDER_LINES),test-airflow-$(line)): test-airflow-%: .venv-airflow-%/.installed
	.venv-airflow-$*/bin/pytest $(XDIST) $(LINE_SUITES) $(LINE_E2E_$*)

test-lines: $(foreach line,$(OLDER_LINES),test-airflow-$(line))

e2e: venv
	$(VENV)/bin/pytest -m e2e

# The emulator's port: `make demo PORT=8765` (default: a free one).
PORT ?= 0
demo: venv
	$(PY) -m scripts.demo --port $(PORT)

# Benchmarks against the official apache-airflow-providers-openai, in their own venv so the bench-only
# packages (requirements/bench.txt) never enter the test environment.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): requirements/lock.txt requirements/bench.txt pyproject.toml | $(UV)
	$(UV) venv --quiet --clear --python $(PYTHON) $(BENCH_VENV)
	$(UV) pip install --quiet --python $(BENCH_VENV) -r requirements/lock.txt -r requirements/bench.txt
	$(UV) pip install --quiet --python $(BENCH_VENV) --no-deps --no-build-isolation -e .
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) -m benchmarks.run_all

# The documentation site (docs/, Sphinx with MyST pages and autodoc), built into docs/_build/html with warnings as
# errors: a broken cross-reference, a missing page or a docstring autodoc cannot read fails the build. Its tools
# (requirements/lock-docs.txt, on top of lock.txt so that autodoc can import the package) live in .venv-docs.
DOCS_VENV := .venv-docs
DOCS_PY := $(DOCS_VENV)/bin/python
DOCS_STAMP := $(DOCS_VENV)/.installed

$(DOCS_STAMP): requirements/lock.txt requirements/lock-docs.txt pyproject.toml | $(UV)
	$(UV) venv --quiet --clear --python $(PYTHON) $(DOCS_VENV)
	$(UV) pip install --quiet --python $(DOCS_VENV) -r requirements/lock.txt -r requirements/lock-docs.txt
	$(UV) pip install --quiet --python $(DOCS_VENV) --no-deps --no-build-isolation -e .
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/_build
	$(DOCS_PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html

# The production topology (tests/e2e/cluster/): PostgreSQL, Redis, CeleryExecutor, two triggerers, and the
# UI in Chromium driven by Playwright. Debian's packages are installed when missing; the Python ones come
# from requirements/lock-cluster.txt (lock.txt's pins plus Celery, psycopg2 and Playwright) in their own venv.
CLUSTER_VENV := .venv-cluster
CLUSTER_STAMP := $(CLUSTER_VENV)/.installed
CLUSTER_DEBIAN_PACKAGES := postgresql redis-server chromium

$(CLUSTER_STAMP): requirements/lock-cluster.txt pyproject.toml | $(UV)
	$(call build_venv,$(CLUSTER_VENV),requirements/lock-cluster.txt)
	touch $(CLUSTER_STAMP)

cluster-packages:
	@scripts/debian_packages.sh $(CLUSTER_DEBIAN_PACKAGES)

# Where the browser test's screenshots go; SCREENSHOTS_DIR=docs/images replaces the README's pictures.
SCREENSHOTS_DIR ?= .e2e-cluster-screenshots

e2e-cluster: cluster-packages $(CLUSTER_STAMP)
	PSOPENAI_SCREENSHOTS_DIR=$(SCREENSHOTS_DIR) $(CLUSTER_VENV)/bin/pytest -m cluster tests/e2e/cluster --durations=10

clean:
	rm -rf $(VENV) .venv-py3.12 .venv-py3.13 $(TOOLS) $(BENCH_VENV) $(DOCS_VENV) $(CLUSTER_VENV) $(foreach line,$(OLDER_LINES),.venv-airflow-$(line)) .mypy_cache .ruff_cache \
		.pytest_cache .hypothesis docs/_build
