# The two commands a new user types (see README):
#   make demo   - create the environment and run an example recipe through real Airflow
#   make test   - create/reuse the environment, install system packages, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := constraints/constraints-3.11.txt
STAMP := $(VENV)/.stepcab-installed
DEMO_RECIPE ?= example_recipes/text-pipeline.yml
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast airflow oracle system-deps science-venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[test]'
	# cult-cargo ships the public radio-astronomy cabs we load in tests and examples; its own
	# dependency (stimela) pins pydantic<2 and cannot live beside Airflow 3, so take only its files.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps cult-cargo==0.2.1
	@touch $(STAMP)

demo: venv
	bash scripts/demo.sh $(DEMO_RECIPE)

system-deps:
	bash scripts/install-test-system-deps.sh

oracle:
	bash scripts/oracle-venv.sh

# Tool venvs of the real radio-astronomy pipeline (example_recipes/science/, docs/science.md).
science-venv:
	bash scripts/science-venv.sh

test: venv system-deps oracle science-venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Quick loop for development: pure-Python layers only.
test-fast: venv
	$(VENV)/bin/pytest -m "not airflow and not slow and not browser" $(PYTEST_ARGS)

airflow: venv
	bash scripts/airflow-standalone.sh

clean:
	rm -rf $(VENV) .oracle-venv .stepcab .pytest_cache

# Parse-speed and task-overhead benchmarks against dag-factory and hand-written DAGs (not a test).
bench: venv
	bash benchmarks/run.sh $(BENCH_ARGS)
