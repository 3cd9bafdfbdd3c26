# Every target sets up what it needs: a virtualenv in .venv with the package installed editable.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DB     ?= sqlite:///supervisor.db

.PHONY: run test lint status clean bench soak

# Two stamps: running needs the package and a PostgreSQL driver only; the test tools (pytest, mypy, pyte) are
# added on top for test and lint, so a server that only runs the supervisor never gets them.
$(VENV)/.installed-run: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $@

run: $(VENV)/.installed-run
	$(PY) -m supervisor run --db $(DB) --workers workers

status: $(VENV)/.installed-run
	$(PY) -m supervisor status --db $(DB)

# Two test processes at a time (pytest-xdist): the suite mostly waits on real processes, and each test keeps to
# its own directory, database and ports. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

# The benchmark (issue 6) has an environment of its own: the package plus APScheduler 3, numpy, py-spy, RQ and Celery
# (bench/requirements.txt), never the project's dependencies. Quick run: make bench BENCH_ARGS=--quick
BENCH_VENV ?= bench/.venv
BENCH_PY   := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: setup.cfg pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e '.[postgres]' -r bench/requirements.txt
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/run.py $(BENCH_ARGS)
	$(BENCH_PY) bench/claims.py

# Several nodes on one PostgreSQL under random faults for about five minutes (issue 13); not part of `make test`.
# Longer: make soak SOAK_SECONDS=1800; another sequence of faults: SOAK_SEED=N.
soak: $(VENV)/.installed-dev
	SOAK_SECONDS=$(or $(SOAK_SECONDS),240) $(PY) -m pytest -s -o faulthandler_timeout=0 tests/soak_cluster.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) bench/out *.egg-info build dist supervisor.db supervisor.db-wal supervisor.db-shm supervisor.db*.lock supervisor.db.pending* worker-supervisor.pending* example-ledger.db*
