# GradePulse: `make run` serves the demo, `make test` runs the suite, `make bench` measures.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT
SOURCES := app.py cli server schema resolvers db monitoring settings bench tests

.PHONY: install run migrate seed test faults lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Upgrade DATABASE_URL's database to the latest migration (staging and production
# refuse to start until it is there; development does it at start).
migrate: install
	$(BIN)/gradepulse migrate

# The seed migrates the (new) demo database first, so the server finds it at head.
seed: install
	$(BIN)/gradepulse seed --if-empty --students 1000 --grades-per-student 20 --seed 42

run: seed
	$(BIN)/gradepulse serve

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	PYTHONPATH=. $(BIN)/lint-imports

# First, alone on a quiet machine, the few tests that time the server under load;
# then the rest in TEST_WORKERS processes (pytest-xdist; each has databases and a
# Redis prefix of its own). The parallel run ends by dropping its large databases,
# whose disk writes would skew a timing test that came after.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest --serial=only $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --serial=skip $(PYTEST_ARGS)

# The fault tests alone (database away, crashes, hostile clients, full disks); `make
# test` runs them with the rest. PostgreSQL's with TEST_DATABASE_URL set.
faults: install
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
