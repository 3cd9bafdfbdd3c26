# Both targets set up everything they need: a virtualenv in .venv with the package installed editable.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DB     ?= sqlite:///supervisor.db

.PHONY: run test lint status clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m supervisor run --db $(DB) --workers workers

status: $(VENV)/.installed
	$(PY) -m supervisor status --db $(DB)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) *.egg-info build dist supervisor.db supervisor.db-wal supervisor.db-shm example-ledger.db*
