# The two commands a newcomer needs: `make lab` (the course) and `make test`.
# Each creates .venv with the project's own Python on first use and reinstalls
# only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 9898
LAB_ARGS ?=

.PHONY: lab test server bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

## make lab: JupyterLab on the course, opened at its first page.
# (Jupyter refuses to run as root without --allow-root: containers often are root.)
ALLOW_ROOT = $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
lab: $(STAMP)
	cd notebooks && $(abspath $(VENV))/bin/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) 00-start-here.ipynb

## make test: lint, type-check (mypy, configured in pyproject.toml), then every test (all
# backends available here).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

## make server: the chat server on epoll, in the foreground.
server: $(STAMP)
	$(PY) -m chatlab.server --backend epoll --host $(HOST) --port $(PORT)

## make bench: build the native load generator and C server (chatlab/bench/native, into
# ~/.cache/chatlab), then the fanout benchmark (figures, not a test).
bench: $(STAMP)
	$(PY) -m chatlab.bench.native
	$(PY) -m chatlab.bench fanout

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

## make notebooks: re-execute every notebook and store its outputs (then commit them).
notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace notebooks/[0-9]*.ipynb
